//! Image archives (placeholder, filled next).
