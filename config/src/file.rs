//! (in progress)
pub struct Config; #[derive(Debug)] pub struct ConfigError;
