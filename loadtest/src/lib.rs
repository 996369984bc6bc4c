//! Test and benchmark peers of Switchboard: the BSP simulator, the client-endpoint
//! simulator (tenants' webhook receivers), sample sends, the fan-out benchmark, and the load
//! generator binary in
//! `main.rs`.

pub mod bsp_sim;
pub mod endpoint_sim;
pub mod fanout_bench;
pub mod sends;
