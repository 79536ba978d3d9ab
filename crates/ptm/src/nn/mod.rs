//! Building blocks shared by every model: parameters, layers, attention, losses.

mod activation;
pub mod attention;
mod dropout;
mod embedding;
mod fused_attention;
mod kernels;
mod layer_norm;
mod linear;
pub mod loss;
pub mod ops;
mod params;
mod precision;
mod simd;

pub use activation::Activation;
pub use dropout::{DropoutRng, Mode, RngState, dropout};
pub use embedding::Embedding;
pub use layer_norm::{LayerNorm, layer_norm};
pub use linear::Linear;
pub use params::{Init, Param, ParamBuilder, ParamStore, StoreOptions};
pub use precision::Precision;
pub(crate) use precision::quantize_int8_rows;
