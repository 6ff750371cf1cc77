#pragma once

namespace servo_controller {

// Version reported by `servo_controller --version`.
inline constexpr const char* kVersion = "1.0.0";

}  // namespace servo_controller
