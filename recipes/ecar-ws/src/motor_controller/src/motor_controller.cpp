#include "motor_controller/motor_controller.hpp"

#include <algorithm>

namespace motor_controller {

namespace {
constexpr double kPi = 3.14159265358979323846;
}  // namespace

double wheel_speed_rpm(double vehicle_speed_mps, double radius_m) {
  return vehicle_speed_mps / (2.0 * kPi * radius_m) * 60.0;
}

double motor_speed_rpm(double wheel_rpm, double gear_ratio) {
  return wheel_rpm * gear_ratio;
}

double motor_torque_for_force(double force_n, double radius_m, double gear_ratio) {
  return force_n * radius_m / gear_ratio;
}

double clamp_motor_torque(double torque_nm) {
  return std::clamp(torque_nm, -kMaxMotorTorqueNm, kMaxMotorTorqueNm);
}

WheelTorques split_torque(double total_torque_nm, double front_bias) {
  const double bias = std::clamp(front_bias, 0.0, 1.0);
  const double front = clamp_motor_torque(total_torque_nm * bias / 2.0);
  const double rear = clamp_motor_torque(total_torque_nm * (1.0 - bias) / 2.0);
  WheelTorques torques{};
  torques[kFrontLeft] = front;
  torques[kFrontRight] = front;
  torques[kRearLeft] = rear;
  torques[kRearRight] = rear;
  return torques;
}

}  // namespace motor_controller
