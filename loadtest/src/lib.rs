//! Test and benchmark peers of Switchboard: the BSP simulator, the client-endpoint
//! simulator (tenants' webhook receivers), sample sends, and the load generator binary in
//! `main.rs`.

pub mod bsp_sim;
pub mod endpoint_sim;
pub mod sends;
