//! Test and benchmark peers of Switchboard: the BSP simulator, sample sends, and the load
//! generator binary in `main.rs`.

pub mod bsp_sim;
pub mod sends;
