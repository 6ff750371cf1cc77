#pragma once

namespace servo_controller {

// Mechanical steering lock of every wheel, in degrees either side of straight.
// `servo_controller --self-test` fails unless it lies in (0, 90).
inline constexpr double kMaxSteeringAngleDeg = 35.0;

// Servo pulse widths: kCenterPulseUs steers straight, and the pulse moves by
// kPulseRangeUs at full lock.
inline constexpr double kCenterPulseUs = 1500.0;
inline constexpr double kPulseRangeUs = 500.0;

// Chassis geometry of the sample car.
inline constexpr double kWheelbaseM = 2.8;
inline constexpr double kTrackWidthM = 1.6;

}  // namespace servo_controller
