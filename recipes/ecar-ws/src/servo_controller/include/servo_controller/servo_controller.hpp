#pragma once

#include <string>
#include <vector>

namespace servo_controller {

// Steering angles in degrees, positive to the left.
struct SteeringAngles {
  double front_left;
  double front_right;
  double rear_left;
  double rear_right;
};

// Clamps an angle to +/- kMaxSteeringAngleDeg.
double clamp_steering_angle(double angle_deg);

// Converts a steering angle to a servo pulse width (microseconds), clamping the
// angle first.
double angle_to_pulse_us(double angle_deg);

// Computes Ackermann angles for four-wheel steering with the rear axle steered
// opposite to the front, so the turn center lies level with the middle of the
// wheelbase. curvature_per_m is 1 / turn radius at the vehicle center, positive
// for a left turn and 0 for straight ahead. Every angle is clamped.
SteeringAngles four_wheel_steering(double curvature_per_m);

// Runs the built-in checks of the limits and functions above and returns one
// message per failed check, so an empty result means every check passed.
std::vector<std::string> self_test();

}  // namespace servo_controller
