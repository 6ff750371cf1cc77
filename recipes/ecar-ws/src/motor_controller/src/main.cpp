// Command-line entry point of the motor controller sample. It is not a daemon:
// each mode prints its result and exits.

#include <iostream>
#include <string>

#include "motor_controller/motor_controller.hpp"
#include "motor_controller/version.hpp"

namespace {

constexpr const char* kUsage =
    "usage: motor_controller [--version | --self-test | --help]\n";

int run_self_test() {
  const auto failures = motor_controller::self_test();
  if (failures.empty()) {
    std::cout << "motor_controller self-test: ok\n";
    return 0;
  }
  for (const auto& failure : failures) {
    std::cout << "motor_controller self-test: FAILED: " << failure << '\n';
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string arg = argc == 2 ? argv[1] : "";
  if (arg == "--version") {
    std::cout << "motor_controller " << motor_controller::kVersion << '\n';
    return 0;
  }
  if (arg == "--self-test") {
    return run_self_test();
  }
  if (arg == "--help") {
    std::cout << kUsage;
    return 0;
  }
  if (!arg.empty()) {
    std::cerr << "motor_controller: unknown argument '" << arg << "'\n" << kUsage;
    return 2;
  }
  std::cout << "motor_controller " << motor_controller::kVersion << ": "
            << motor_controller::kWheelCount << " wheel motors, max "
            << motor_controller::kMaxMotorTorqueNm << " Nm each, gear ratio "
            << motor_controller::kGearRatio << '\n';
  return 0;
}
