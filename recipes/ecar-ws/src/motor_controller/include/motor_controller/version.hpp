#pragma once

namespace motor_controller {

// Version reported by `motor_controller --version`.
inline constexpr const char* kVersion = "1.0.0";

}  // namespace motor_controller
