#include <cmath>
#include <sstream>

#include "servo_controller/limits.hpp"
#include "servo_controller/servo_controller.hpp"

namespace servo_controller {

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

  if (!(kMaxSteeringAngleDeg > 0.0 && kMaxSteeringAngleDeg < 90.0)) {
    std::ostringstream message;
    message << "kMaxSteeringAngleDeg is " << kMaxSteeringAngleDeg
            << ", expected a value in (0, 90) degrees";
    failures.push_back(message.str());
  }

  check(near(clamp_steering_angle(1000.0), kMaxSteeringAngleDeg) &&
            near(clamp_steering_angle(-1000.0), -kMaxSteeringAngleDeg) &&
            near(clamp_steering_angle(0.0), 0.0),
        "clamp_steering_angle does not clamp to +/- kMaxSteeringAngleDeg");
  check(near(angle_to_pulse_us(0.0), kCenterPulseUs) &&
            near(angle_to_pulse_us(kMaxSteeringAngleDeg), kCenterPulseUs + kPulseRangeUs) &&
            near(angle_to_pulse_us(-1000.0), kCenterPulseUs - kPulseRangeUs),
        "angle_to_pulse_us does not map full lock to the pulse range");

  const SteeringAngles straight = four_wheel_steering(0.0);
  check(near(straight.front_left, 0.0) && near(straight.front_right, 0.0) &&
            near(straight.rear_left, 0.0) && near(straight.rear_right, 0.0),
        "four_wheel_steering(0) does not point every wheel straight ahead");

  // A 10 m left turn: the inner (left) wheels turn more, and the rear mirrors the front.
  const SteeringAngles left = four_wheel_steering(0.1);
  check(left.front_left > left.front_right && left.front_right > 0.0,
        "four_wheel_steering(0.1) does not turn the inner wheel more than the outer");
  check(near(left.rear_left, -left.front_left) && near(left.rear_right, -left.front_right),
        "four_wheel_steering(0.1) does not counter-steer the rear axle");

  const SteeringAngles right = four_wheel_steering(-0.1);
  check(near(right.front_right, -left.front_left) && near(right.front_left, -left.front_right),
        "four_wheel_steering is not symmetric between left and right turns");

  return failures;
}

}  // namespace servo_controller
