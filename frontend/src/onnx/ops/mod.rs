//! The ONNX operator registry: one line per operator, naming the function that expands it into
//! primitives. Grouped by family in the sibling modules.

mod attention;
mod control;
mod elementwise;
mod loss;
mod nn;
mod quant;
mod reduce;
mod rnn;
mod sampling;
mod shape;
mod signal;
mod training;

use super::{Importer, NodeCtx, Value};
use crate::FrontendError;
use odc_ir::NodeId;

/// An operator import function.
pub type OpFn = fn(&mut Importer, &NodeCtx) -> Result<Vec<Value>, FrontendError>;

pub(crate) type R = Result<Vec<Value>, FrontendError>;

pub(crate) fn one(n: NodeId) -> R {
    Ok(vec![Value::Tensor(n)])
}

pub(crate) fn many(ns: Vec<NodeId>) -> R {
    Ok(ns.into_iter().map(Value::Tensor).collect())
}

/// The import function for `domain::op`, if odc supports it.
pub fn lookup(domain: &str, op: &str) -> Option<OpFn> {
    use elementwise as e;
    use nn as n;
    use quant as q;
    use reduce as r;
    use shape as s;
    match domain {
        "" | "ai.onnx" => {}
        "ai.onnx.preview.training" => {
            return Some(match op {
                "Adagrad" => training::adagrad,
                "Adam" => training::adam,
                "Momentum" => training::momentum,
                _ => return None,
            })
        }
        _ => return None,
    }
    Some(match op {
        // elementwise: unary
        "Abs" | "Neg" | "Sqrt" | "Exp" | "Log" | "Sin" | "Cos" | "Tan" | "Asin" | "Acos" | "Atan" | "Sinh" | "Cosh"
        | "Tanh" | "Asinh" | "Acosh" | "Atanh" | "Erf" | "Floor" | "Ceil" | "Round" | "Sign" | "Reciprocal" | "Not"
        | "BitwiseNot" | "IsNaN" => e::unary,
        "IsInf" => e::is_inf,
        "Identity" => e::identity,
        // elementwise: binary and variadic
        "Add" | "Sub" | "Mul" | "Div" | "And" | "Or" | "Xor" | "BitwiseAnd" | "BitwiseOr" | "BitwiseXor" | "Equal"
        | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" => e::binary,
        "Pow" => e::pow,
        "Mod" => e::modulo,
        "BitShift" => e::bit_shift,
        "Max" | "Min" | "Sum" | "Mean" => e::variadic,
        "Where" => e::where_,
        "Clip" => e::clip,
        "Cast" => e::cast,
        "CastLike" => e::cast_like,
        "BitCast" => e::bitcast,
        // activations
        "Relu" | "LeakyRelu" | "PRelu" | "Elu" | "Selu" | "Celu" | "Sigmoid" | "HardSigmoid" | "HardSwish" | "Softplus"
        | "Softsign" | "ThresholdedRelu" | "Shrink" | "Gelu" | "Mish" | "Swish" => e::activation,
        "Dropout" => e::dropout,
        // shape and data movement
        "Reshape" => s::reshape,
        "Flatten" => s::flatten,
        "Squeeze" => s::squeeze,
        "Unsqueeze" => s::unsqueeze,
        "Transpose" => s::transpose,
        "Concat" => s::concat,
        "Split" => s::split,
        "Slice" => s::slice,
        "Expand" => s::expand,
        "Tile" => s::tile,
        "Pad" => s::pad,
        "Shape" => s::shape,
        "Size" => s::size,
        "Constant" => s::constant,
        "ConstantOfShape" => s::constant_of_shape,
        "Range" => s::range,
        "Gather" => s::gather,
        "GatherElements" => s::gather_elements,
        "GatherND" => s::gather_nd,
        "ScatterElements" | "Scatter" => s::scatter_elements,
        "ScatterND" => s::scatter_nd,
        "OneHot" => s::one_hot,
        "Trilu" => s::trilu,
        "DepthToSpace" => s::depth_to_space,
        "SpaceToDepth" => s::space_to_depth,
        "EyeLike" => s::eye_like,
        "CenterCropPad" => s::center_crop_pad,
        "ReverseSequence" => s::reverse_sequence,
        // reductions and normalisations
        "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2"
        | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" => r::reduce,
        "ArgMax" | "ArgMin" => r::arg_reduce,
        "Softmax" | "LogSoftmax" | "Hardmax" => r::softmax_family,
        "CumSum" | "CumProd" => r::cumulative,
        "TopK" => r::top_k,
        "LpNormalization" => r::lp_normalization,
        "MeanVarianceNormalization" => r::mean_variance_normalization,
        "LayerNormalization" => r::layer_normalization,
        "RMSNormalization" => r::rms_normalization,
        "GroupNormalization" => r::group_normalization,
        "InstanceNormalization" => r::instance_normalization,
        "BatchNormalization" => r::batch_normalization,
        "LRN" => r::lrn,
        // contraction, pooling, resampling
        "MatMul" => n::matmul,
        "Gemm" => n::gemm,
        "Conv" => n::conv,
        "ConvTranspose" => n::conv_transpose,
        "MaxPool" | "AveragePool" | "LpPool" => n::pool,
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => n::global_pool,
        "Einsum" => n::einsum,
        "Resize" | "Upsample" => n::resize,
        "Attention" => attention::attention,
        "RotaryEmbedding" => attention::rotary_embedding,
        "SwiGLU" => attention::swiglu,
        "LinearAttention" => attention::linear_attention,
        "CausalConvWithState" => attention::causal_conv_with_state,
        "GridSample" => sampling::grid_sample,
        "AffineGrid" => sampling::affine_grid,
        "NegativeLogLikelihoodLoss" => loss::negative_log_likelihood_loss,
        "SoftmaxCrossEntropyLoss" => loss::softmax_cross_entropy_loss,
        // signal processing
        "HannWindow" | "HammingWindow" | "BlackmanWindow" => signal::window,
        "DFT" => signal::dft_op,
        "STFT" => signal::stft,
        // quantisation
        "QuantizeLinear" => q::quantize_linear,
        "DequantizeLinear" => q::dequantize_linear,
        "DynamicQuantizeLinear" => q::dynamic_quantize_linear,
        "MatMulInteger" => q::matmul_integer,
        "QLinearMatMul" => q::qlinear_matmul,
        "ConvInteger" => q::conv_integer,
        "QLinearConv" => q::qlinear_conv,
        // recurrent
        "RNN" | "GRU" | "LSTM" => rnn::recurrent,
        // control flow and sequences
        "If" => control::if_,
        "Loop" => control::loop_,
        "Scan" => control::scan,
        _ => return None,
    })
}
