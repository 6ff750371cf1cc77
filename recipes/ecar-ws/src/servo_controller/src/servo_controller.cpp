#include "servo_controller/servo_controller.hpp"

#include <algorithm>
#include <cmath>

#include "servo_controller/limits.hpp"

namespace servo_controller {

namespace {
constexpr double kRadToDeg = 57.29577951308232;
}  // namespace

double clamp_steering_angle(double angle_deg) {
  // std::min/std::max rather than std::clamp, which is undefined for a negative
  // limit. The self-test reports such a limit instead.
  return std::max(-kMaxSteeringAngleDeg, std::min(angle_deg, kMaxSteeringAngleDeg));
}

double angle_to_pulse_us(double angle_deg) {
  return kCenterPulseUs + clamp_steering_angle(angle_deg) / kMaxSteeringAngleDeg * kPulseRangeUs;
}

SteeringAngles four_wheel_steering(double curvature_per_m) {
  // Each wheel points at the turn center, which lies half a wheelbase from
  // either axle. The inner wheel turns more than the outer one.
  const double half_wheelbase = kWheelbaseM / 2.0;
  const double half_track = kTrackWidthM / 2.0;
  const double left = std::atan2(half_wheelbase * curvature_per_m,
                                 1.0 - curvature_per_m * half_track) * kRadToDeg;
  const double right = std::atan2(half_wheelbase * curvature_per_m,
                                  1.0 + curvature_per_m * half_track) * kRadToDeg;
  const double front_left = clamp_steering_angle(left);
  const double front_right = clamp_steering_angle(right);
  return SteeringAngles{front_left, front_right, -front_left, -front_right};
}

}  // namespace servo_controller
