// Command-line entry point of the steering servo controller sample. It is not a
// daemon: each mode prints its result and exits.

#include <iostream>
#include <string>

#include "servo_controller/limits.hpp"
#include "servo_controller/servo_controller.hpp"
#include "servo_controller/version.hpp"

namespace {

constexpr const char* kUsage =
    "usage: servo_controller [--version | --self-test | --help]\n";

int run_self_test() {
  const auto failures = servo_controller::self_test();
  if (failures.empty()) {
    std::cout << "servo_controller self-test: ok\n";
    return 0;
  }
  for (const auto& failure : failures) {
    std::cout << "servo_controller self-test: FAILED: " << failure << '\n';
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
    std::cout << "servo_controller " << servo_controller::kVersion << '\n';
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
    std::cerr << "servo_controller: unknown argument '" << arg << "'\n" << kUsage;
    return 2;
  }
  std::cout << "servo_controller " << servo_controller::kVersion
            << ": 4 steering servos, max steering angle "
            << servo_controller::kMaxSteeringAngleDeg << " deg\n";
  return 0;
}
