#pragma once

#include <array>
#include <string>
#include <vector>

namespace motor_controller {

// Drivetrain constants of the sample car: one motor per wheel, each behind a
// fixed-ratio reduction gear.
inline constexpr int kWheelCount = 4;
inline constexpr double kWheelRadiusM = 0.33;
inline constexpr double kGearRatio = 8.0;              // motor turns per wheel turn
inline constexpr double kMaxMotorTorqueNm = 250.0;     // per motor
inline constexpr double kMaxMotorSpeedRpm = 12000.0;

// Wheel order used by every per-wheel array.
enum Wheel { kFrontLeft = 0, kFrontRight = 1, kRearLeft = 2, kRearRight = 3 };

using WheelTorques = std::array<double, kWheelCount>;

// Converts vehicle speed (m/s) to wheel speed (rpm) for a wheel of radius_m.
double wheel_speed_rpm(double vehicle_speed_mps, double radius_m = kWheelRadiusM);

// Converts wheel speed to motor speed through the reduction gear.
double motor_speed_rpm(double wheel_rpm, double gear_ratio = kGearRatio);

// Returns the motor torque (Nm) needed for a tractive force (N) at one wheel.
double motor_torque_for_force(double force_n,
                              double radius_m = kWheelRadiusM,
                              double gear_ratio = kGearRatio);

// Clamps a motor torque request to +/- kMaxMotorTorqueNm.
double clamp_motor_torque(double torque_nm);

// Splits a total motor torque request over the four motors. front_bias is the
// share sent to the front axle (0..1, clamped), divided evenly left/right, and
// each motor's share is clamped to its limit.
WheelTorques split_torque(double total_torque_nm, double front_bias);

// Runs the built-in checks of the functions above and returns one message per
// failed check, so an empty result means every check passed.
std::vector<std::string> self_test();

}  // namespace motor_controller
