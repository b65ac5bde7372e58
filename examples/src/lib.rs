//! Example programs live beside this file; see `examples/*.rs`.
