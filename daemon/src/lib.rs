//! accessd (in progress)
