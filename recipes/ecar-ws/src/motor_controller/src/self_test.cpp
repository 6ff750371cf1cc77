#include <cmath>
#include <sstream>

#include "motor_controller/motor_controller.hpp"

namespace motor_controller {

namespace {

bool near(double a, double b, double tolerance = 1e-6) {
  return std::fabs(a - b) <= tolerance;
}

}  // namespace

std::vector<std::string> self_test() {
  std::vector<std::string> failures;
  auto check = [&failures](bool ok, const std::string& what) {
    if (!ok) failures.push_back(what);
  };

  check(kWheelRadiusM > 0.0 && kGearRatio > 0.0 && kMaxMotorTorqueNm > 0.0,
        "drivetrain constants must be positive");

  // 10 m/s on a 0.5 m wheel is 10 / (2 * pi * 0.5) turns per second.
  check(near(wheel_speed_rpm(10.0, 0.5), 190.985931, 1e-5),
        "wheel_speed_rpm(10 m/s, 0.5 m) is not 190.986 rpm");
  check(near(motor_speed_rpm(60.0), 60.0 * kGearRatio),
        "motor_speed_rpm does not apply the gear ratio");

  // Top speed must be reachable within the motor speed limit: 50 m/s = 180 km/h.
  const double top_speed_motor_rpm = motor_speed_rpm(wheel_speed_rpm(50.0));
  if (top_speed_motor_rpm > kMaxMotorSpeedRpm) {
    std::ostringstream message;
    message << "180 km/h needs " << top_speed_motor_rpm << " motor rpm, limit is "
            << kMaxMotorSpeedRpm;
    failures.push_back(message.str());
  }

  check(near(motor_torque_for_force(kGearRatio / kWheelRadiusM), 1.0),
        "motor_torque_for_force does not invert radius and gear ratio");
  check(near(clamp_motor_torque(1e6), kMaxMotorTorqueNm) &&
            near(clamp_motor_torque(-1e6), -kMaxMotorTorqueNm) &&
            near(clamp_motor_torque(10.0), 10.0),
        "clamp_motor_torque does not clamp to the motor limit");

  const WheelTorques even = split_torque(400.0, 0.5);
  check(near(even[kFrontLeft], 100.0) && near(even[kFrontRight], 100.0) &&
            near(even[kRearLeft], 100.0) && near(even[kRearRight], 100.0),
        "split_torque with front_bias 0.5 is not an even split");
  const WheelTorques rear_only = split_torque(2000.0, -1.0);
  check(near(rear_only[kFrontLeft], 0.0) && near(rear_only[kRearLeft], kMaxMotorTorqueNm),
        "split_torque does not clamp front_bias or per-motor torque");

  return failures;
}

}  // namespace motor_controller
