//! State store integration tests (placeholder; another engineer writes this file).
