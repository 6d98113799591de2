//! Build small ONNX models in code, for tests of the importer and its error paths.

use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    Message, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// A dimension: fixed or symbolic.
pub enum D {
    N(i64),
    S(&'static str),
}

pub fn value_info(name: &str, elem_type: i32, dims: &[D]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for d in dims {
        let mut dim = tensor_shape_proto::Dimension::new();
        dim.value = Some(match d {
            D::N(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
            D::S(s) => tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
        });
        shape.dim.push(dim);
    }
    let mut tt = type_proto::Tensor::new();
    tt.elem_type = elem_type;
    tt.shape = Some(shape).into();
    let mut t = TypeProto::new();
    t.value = Some(type_proto::Value::TensorType(tt));
    let mut v = ValueInfoProto::new();
    v.name = name.to_string();
    v.type_ = Some(t).into();
    v
}

/// A float32 input/output of fixed shape.
pub fn f32_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    value_info(name, 1, &dims.iter().map(|&d| D::N(d)).collect::<Vec<_>>())
}

pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.to_string();
    n.name = name.to_string();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n
}

pub fn attr_int(n: &mut NodeProto, name: &str, v: i64) {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    a.i = v;
    a.type_ = AttributeType::INT.into();
    n.attribute.push(a);
}

pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.to_vec();
    t.data_type = 1;
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

pub fn i64_tensor(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.to_vec();
    t.data_type = 7;
    t.int64_data = values.to_vec();
    t
}

/// A float tensor whose data lives in an external file.
pub fn external_f32(name: &str, dims: &[i64], location: &str, offset: usize, length: usize) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.to_vec();
    t.data_type = 1;
    t.data_location = DataLocation::EXTERNAL.into();
    for (k, v) in [("location", location.to_string()), ("offset", offset.to_string()), ("length", length.to_string())] {
        let mut e = StringStringEntryProto::new();
        e.key = k.to_string();
        e.value = v;
        t.external_data.push(e);
    }
    t
}

pub fn graph(nodes: Vec<NodeProto>, inputs: Vec<ValueInfoProto>, outputs: Vec<ValueInfoProto>, inits: Vec<TensorProto>) -> GraphProto {
    let mut g = GraphProto::new();
    g.name = "test".into();
    g.node = nodes;
    g.input = inputs;
    g.output = outputs;
    g.initializer = inits;
    g
}

pub fn model(g: GraphProto, opset: i64) -> ModelProto {
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut o = OperatorSetIdProto::new();
    o.version = opset;
    m.opset_import.push(o);
    m.graph = Some(g).into();
    m
}

pub fn to_bytes(m: &ModelProto) -> Vec<u8> {
    m.write_to_bytes().expect("serialise model")
}
