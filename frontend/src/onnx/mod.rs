//! ONNX → graph IR.
//!
//! Loading ([`load_model`]), then a single pass over the nodes in order: each ONNX operator is
//! looked up in the registry ([`ops::lookup`]) and expanded into primitives through the
//! [`Builder`]. Unsupported operators, attributes and dtypes are collected (with node names) and
//! reported together; structurally invalid models fail at the first problem. Model-local
//! functions are inlined; `If` with a constant condition picks its branch; `Loop`/`Scan` with a
//! static trip count are unrolled.

pub mod ops;
pub mod tensor;
mod wire;

use crate::{FrontendError, Unsupported};
use odc_ir::{DType, Evaluator, Graph, IrError, NodeId, SymDim, TensorType};
use odc_passes::Builder;
use onnx_protobuf::{
    attribute_proto::AttributeType, AttributeProto, FunctionProto, GraphProto, Message, ModelProto,
    NodeProto, TensorProto, TypeProto, ValueInfoProto,
};
use std::collections::HashMap;
use std::path::Path;
pub use onnx_protobuf::type_proto;
pub use tensor::{dtype_from_onnx, tensor_from_proto, ExternalData};

/// The newest default-domain opset whose semantics odc implements.
pub const MAX_OPSET: i64 = 28;

/// A parsed ONNX model plus where its external data lives.
pub struct OnnxModel {
    pub proto: ModelProto,
    pub external: ExternalData,
}

/// Read and parse an ONNX file.
pub fn load_model(path: &Path) -> Result<OnnxModel, FrontendError> {
    let bytes = std::fs::read(path).map_err(|e| FrontendError::Io(format!("cannot read {}: {e}", path.display())))?;
    let proto = parse_model(&bytes)?;
    Ok(OnnxModel { proto, external: ExternalData::new(path.parent()) })
}

/// Parse model bytes (external data, if any, cannot be resolved).
pub fn parse_model(bytes: &[u8]) -> Result<ModelProto, FrontendError> {
    wire::check_top_level(bytes).map_err(|e| FrontendError::Malformed(format!("not a valid ONNX protobuf: {e}")))?;
    let proto = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| FrontendError::Malformed(format!("not a valid ONNX protobuf: {e}")))?;
    if proto.graph.is_none() {
        return Err(FrontendError::Malformed("the model has no graph".into()));
    }
    Ok(proto)
}

/// Parse a serialized `TensorProto` (e.g. a test-data `.pb` file).
pub fn parse_tensor(bytes: &[u8], ext: &ExternalData) -> Result<odc_ir::Tensor, FrontendError> {
    wire::check_top_level(bytes).map_err(|e| FrontendError::Malformed(format!("not a TensorProto: {e}")))?;
    let t = TensorProto::parse_from_bytes(bytes).map_err(|e| FrontendError::Malformed(format!("not a TensorProto: {e}")))?;
    tensor_from_proto(&t, ext)
}

pub use crate::source::{DeclaredInput, ImportOptions};

/// The external-data files a model's tensors name (relative locations, each once), in every
/// graph and subgraph: what a build cache must watch besides the model file.
pub fn external_data_files(model: &ModelProto) -> Vec<String> {
    fn walk(g: &GraphProto, out: &mut Vec<String>) {
        let tensors = g.initializer.iter().chain(g.node.iter().flat_map(|n| n.attribute.iter().flat_map(|a| a.t.as_ref().into_iter().chain(&a.tensors))));
        for t in tensors {
            for kv in &t.external_data {
                if kv.key == "location" && !out.contains(&kv.value) {
                    out.push(kv.value.clone());
                }
            }
        }
        for a in g.node.iter().flat_map(|n| &n.attribute) {
            a.g.as_ref().into_iter().chain(&a.graphs).for_each(|sub| walk(sub, out));
        }
    }
    let mut out = vec![];
    if let Some(g) = model.graph.as_ref() {
        walk(g, &mut out);
    }
    out
}

/// The non-initializer inputs a model declares.
pub fn declared_inputs(model: &ModelProto) -> Vec<DeclaredInput> {
    let g = &model.graph;
    let inits: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    g.input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .map(|i| {
            let (dtype, shape) = value_info_type(i);
            DeclaredInput { name: i.name.clone(), dtype, shape }
        })
        .collect()
}

fn value_info_type(v: &ValueInfoProto) -> (Result<DType, String>, Option<Vec<SymDim>>) {
    match v.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => {
            let shape = t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(onnx_protobuf::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => {
                            SymDim::Fixed(*v as usize)
                        }
                        Some(onnx_protobuf::tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => {
                            SymDim::Named(p.clone())
                        }
                        _ => SymDim::Named("?".into()),
                    })
                    .collect()
            });
            (dtype_from_onnx(t.elem_type), shape)
        }
        Some(type_proto::Value::SequenceType(_)) => (Err("sequence".into()), None),
        Some(type_proto::Value::OptionalType(_)) => (Err("optional".into()), None),
        Some(type_proto::Value::MapType(_)) => (Err("map".into()), None),
        Some(type_proto::Value::SparseTensorType(_)) => (Err("sparse tensor".into()), None),
        Some(_) => (Err("unknown type".into()), None),
        None => (Err("untyped".into()), None),
    }
}

/// What an ONNX value name is bound to during import.
#[derive(Clone, Debug)]
pub enum Value {
    Tensor(NodeId),
    /// A sequence with compile-time length.
    Sequence(Vec<NodeId>, Option<DType>),
    /// An optional: `None` is the empty optional.
    Optional(Option<Box<Value>>),
    /// Produced by an unsupported node (already reported).
    Poison,
}

/// One node being imported: its proto, resolved inputs and the opset in effect.
pub struct NodeCtx<'a> {
    pub node: &'a NodeProto,
    pub inputs: Vec<Option<Value>>,
    pub opset: i64,
    /// Attribute values of the enclosing function call (for `ref_attr_name`).
    pub outer_attrs: Option<&'a HashMap<String, AttributeProto>>,
}

impl<'a> NodeCtx<'a> {
    pub fn name(&self) -> &str {
        &self.node.name
    }
    pub fn op(&self) -> &str {
        &self.node.op_type
    }

    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        let a = self.node.attribute.iter().find(|a| a.name == name)?;
        if !a.ref_attr_name.is_empty() {
            return self.outer_attrs.and_then(|m| m.get(&a.ref_attr_name));
        }
        Some(a)
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    pub fn attr_i(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map(|a| a.i).unwrap_or(default)
    }

    pub fn attr_f(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map(|a| a.f).unwrap_or(default)
    }

    pub fn attr_s(&self, name: &str, default: &str) -> String {
        self.attr(name).map(|a| String::from_utf8_lossy(&a.s).into_owned()).unwrap_or_else(|| default.to_string())
    }

    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    pub fn attr_floats(&self, name: &str) -> Option<Vec<f32>> {
        self.attr(name).map(|a| a.floats.clone())
    }

    pub fn attr_tensor(&self, name: &str) -> Option<&TensorProto> {
        self.attr(name).and_then(|a| a.t.as_ref())
    }

    pub fn attr_graph(&self, name: &str) -> Option<&GraphProto> {
        self.attr(name).and_then(|a| a.g.as_ref())
    }

    pub fn attr_type(&self, name: &str) -> Option<AttributeType> {
        self.attr(name).and_then(|a| a.type_.enum_value().ok())
    }

    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// True when input `i` is present (not omitted and not empty-named).
    pub fn has_input(&self, i: usize) -> bool {
        matches!(self.inputs.get(i), Some(Some(Value::Tensor(_))))
    }

    /// Required tensor input `i`.
    pub fn input(&self, i: usize) -> Result<NodeId, FrontendError> {
        match self.inputs.get(i) {
            Some(Some(Value::Tensor(n))) => Ok(*n),
            Some(Some(_)) => Err(FrontendError::Unsupported(format!("input {i} is not a tensor"))),
            _ => Err(FrontendError::Invalid(format!("{} '{}' needs input {i}", self.op(), self.name()))),
        }
    }

    /// Optional tensor input `i`.
    pub fn opt_input(&self, i: usize) -> Option<NodeId> {
        match self.inputs.get(i) {
            Some(Some(Value::Tensor(n))) => Some(*n),
            _ => None,
        }
    }

    pub fn value(&self, i: usize) -> Option<&Value> {
        self.inputs.get(i).and_then(|v| v.as_ref())
    }

    pub fn unsupported<T>(&self, what: impl Into<String>) -> Result<T, FrontendError> {
        Err(FrontendError::Unsupported(what.into()))
    }
}

/// The import state.
pub struct Importer<'m, 'e> {
    pub b: Builder<'e>,
    ext: &'m ExternalData,
    opsets: HashMap<String, i64>,
    functions: HashMap<(String, String), &'m FunctionProto>,
    scopes: Vec<HashMap<String, Value>>,
    problems: Vec<Unsupported>,
    fresh: usize,
    /// Raw initializer bytes moved out of the model (by name), so they are not copied.
    taken_raw: HashMap<String, Vec<u8>>,
}

fn ir_err(e: IrError) -> FrontendError {
    FrontendError::Invalid(e.0)
}

impl From<IrError> for FrontendError {
    fn from(e: IrError) -> Self {
        ir_err(e)
    }
}

/// Import the model's main graph.
pub fn import(model: &OnnxModel, opts: &ImportOptions, eval: &dyn Evaluator) -> Result<Graph, FrontendError> {
    import_with(model, HashMap::new(), opts, eval)
}

/// [`import`], consuming the model: initializer bytes move into the graph instead of being
/// copied, so a large model is held once, not twice.
pub fn import_owned(mut model: OnnxModel, opts: &ImportOptions, eval: &dyn Evaluator) -> Result<Graph, FrontendError> {
    let mut taken = HashMap::new();
    if let Some(g) = model.proto.graph.as_mut() {
        for t in &mut g.initializer {
            if !t.raw_data.is_empty() && !taken.contains_key(&t.name) {
                taken.insert(t.name.clone(), std::mem::take(&mut t.raw_data));
            }
        }
    }
    import_with(&model, taken, opts, eval)
}

fn import_with(model: &OnnxModel, taken_raw: HashMap<String, Vec<u8>>, opts: &ImportOptions, eval: &dyn Evaluator) -> Result<Graph, FrontendError> {
    let proto = &model.proto;
    let mut opsets = HashMap::new();
    for o in &proto.opset_import {
        opsets.insert(o.domain.clone(), o.version);
    }
    if proto.opset_import.is_empty() {
        opsets.insert(String::new(), 1);
    }
    let mut imp = Importer {
        b: Builder::new(eval),
        ext: &model.external,
        opsets,
        functions: proto.functions.iter().map(|f| ((f.domain.clone(), f.name.clone()), f)).collect(),
        scopes: vec![HashMap::new()],
        problems: vec![],
        fresh: 0,
        taken_raw,
    };
    if let Some(&v) = imp.opsets.get("") {
        if v > MAX_OPSET {
            imp.problems.push(Unsupported {
                node: "<model>".into(),
                op: "opset".into(),
                reason: format!("default-domain opset {v} is newer than the newest supported ({MAX_OPSET})"),
            });
        }
    }
    let g = &proto.graph;
    imp.bind_initializers(g)?;
    imp.bind_inputs(g, opts)?;
    for node in &g.node {
        imp.import_node(node, None)?;
    }
    let mut outputs = vec![];
    for o in &g.output {
        match imp.lookup(&o.name) {
            Some(Value::Tensor(n)) => outputs.push((o.name.clone(), n)),
            Some(Value::Poison) => {}
            Some(_) => imp.problems.push(Unsupported {
                node: o.name.clone(),
                op: "output".into(),
                reason: "sequence and optional graph outputs are not supported".into(),
            }),
            None => return Err(FrontendError::Invalid(format!("graph output '{}' is not produced by any node", o.name))),
        }
    }
    if !imp.problems.is_empty() {
        return Err(FrontendError::UnsupportedList(imp.problems));
    }
    let mut graph = imp.b.finish();
    for (name, n) in outputs {
        graph.set_output(&name, n);
    }
    graph.remove_dead();
    graph.verify().map_err(ir_err)?;
    Ok(graph)
}

impl<'m, 'e> Importer<'m, 'e> {
    pub fn lookup(&self, name: &str) -> Option<Value> {
        self.scopes.iter().rev().find_map(|s| s.get(name).cloned())
    }

    fn bind(&mut self, name: &str, v: Value) {
        self.scopes.last_mut().expect("scope").insert(name.to_string(), v);
    }

    pub fn opset(&self, domain: &str) -> i64 {
        let d = if domain == "ai.onnx" { "" } else { domain };
        self.opsets.get(d).copied().unwrap_or(1)
    }

    pub fn ext(&self) -> &'m ExternalData {
        self.ext
    }

    fn bind_initializers(&mut self, g: &GraphProto) -> Result<(), FrontendError> {
        for t in &g.initializer {
            let raw = self.taken_raw.remove(&t.name);
            match tensor::tensor_from_proto_with(t, self.ext, raw) {
                Ok(tensor) => {
                    self.b.origin = t.name.clone();
                    let n = self.b.constant(tensor);
                    self.bind(&t.name, Value::Tensor(n));
                }
                Err(FrontendError::Unsupported(msg)) => {
                    self.problems.push(Unsupported { node: t.name.clone(), op: "initializer".into(), reason: msg });
                    self.bind(&t.name, Value::Poison);
                }
                Err(e) => return Err(e),
            }
        }
        if !g.sparse_initializer.is_empty() {
            self.problems.push(Unsupported {
                node: "<graph>".into(),
                op: "sparse_initializer".into(),
                reason: "sparse initializers are not supported".into(),
            });
        }
        Ok(())
    }

    fn bind_inputs(&mut self, g: &GraphProto, opts: &ImportOptions) -> Result<(), FrontendError> {
        let mut unresolved = vec![];
        for i in &g.input {
            if self.lookup(&i.name).is_some() {
                continue; // an initializer with a default value
            }
            let (dtype, shape) = value_info_type(i);
            let dtype = match dtype {
                Ok(d) => d,
                Err(what) => {
                    self.problems.push(Unsupported {
                        node: i.name.clone(),
                        op: "input".into(),
                        reason: format!("input type {what} is not supported"),
                    });
                    self.bind(&i.name, Value::Poison);
                    continue;
                }
            };
            let shape = if let Some(s) = opts.input_shapes.get(&i.name) {
                s.clone()
            } else {
                let Some(decl) = shape else {
                    unresolved.push(format!("'{}' has no declared shape", i.name));
                    continue;
                };
                let mut out = vec![];
                for d in decl {
                    match d {
                        SymDim::Fixed(v) => out.push(v),
                        SymDim::Named(n) => match opts.dims.get(&n) {
                            Some(&v) => out.push(v),
                            None => {
                                unresolved.push(format!("'{}' has symbolic dimension '{n}'", i.name));
                                out.clear();
                                break;
                            }
                        },
                    }
                }
                if out.is_empty() && unresolved.last().is_some_and(|u| u.starts_with(&format!("'{}'", i.name))) {
                    continue;
                }
                out
            };
            let n = self.b.g.add_input(&i.name, TensorType::new(dtype, shape));
            if let Some(v) = opts.input_values.get(&i.name) {
                self.b.set_freezable(n, v.clone());
            }
            self.bind(&i.name, Value::Tensor(n));
        }
        if !unresolved.is_empty() {
            return Err(FrontendError::Shape(format!(
                "input shapes are not fully known: {}; pass --shape NAME=D1xD2x... for each",
                unresolved.join(", ")
            )));
        }
        Ok(())
    }

    fn node_label(node: &NodeProto) -> String {
        if !node.name.is_empty() {
            node.name.clone()
        } else if let Some(o) = node.output.iter().find(|o| !o.is_empty()) {
            format!("{}({o})", node.op_type)
        } else {
            node.op_type.clone()
        }
    }

    /// Import one node, binding its outputs.
    pub fn import_node(&mut self, node: &NodeProto, outer: Option<&HashMap<String, AttributeProto>>) -> Result<(), FrontendError> {
        let label = Self::node_label(node);
        let mut inputs = vec![];
        let mut poisoned = false;
        for name in &node.input {
            if name.is_empty() {
                inputs.push(None);
                continue;
            }
            match self.lookup(name) {
                Some(Value::Poison) => {
                    poisoned = true;
                    inputs.push(Some(Value::Poison));
                }
                Some(v) => inputs.push(Some(v)),
                None => {
                    return Err(FrontendError::Invalid(format!(
                        "node '{label}' ({}) reads '{name}', which no node, input or initializer produces",
                        node.op_type
                    )))
                }
            }
        }
        let domain = if node.domain == "ai.onnx" { "" } else { node.domain.as_str() };
        let opset = self.opset(domain);
        let local_fn = self.functions.get(&(node.domain.clone(), node.op_type.clone())).copied();
        let handler = ops::lookup(domain, &node.op_type);
        if handler.is_none() && local_fn.is_none() {
            let dom = if domain.is_empty() { String::new() } else { format!("{domain}.") };
            self.problems.push(Unsupported {
                node: label,
                op: node.op_type.clone(),
                reason: format!("operator {dom}{} is not supported", node.op_type),
            });
            self.poison_outputs(node);
            return Ok(());
        }
        if poisoned {
            self.poison_outputs(node);
            return Ok(());
        }
        self.b.origin = label.clone();
        let ctx = NodeCtx { node, inputs, opset, outer_attrs: outer };
        let result = match local_fn {
            Some(f) => self.inline_function(f, &ctx),
            None => (handler.expect("checked"))(self, &ctx),
        };
        match result {
            Ok(values) => {
                for (k, out) in node.output.iter().enumerate() {
                    if out.is_empty() {
                        continue;
                    }
                    match values.get(k) {
                        Some(v) => self.bind(out, v.clone()),
                        None => {
                            self.problems.push(Unsupported {
                                node: label.clone(),
                                op: node.op_type.clone(),
                                reason: format!("output {k} ('{out}') is not supported"),
                            });
                            self.bind(out, Value::Poison);
                        }
                    }
                }
                Ok(())
            }
            Err(FrontendError::Unsupported(reason)) => {
                self.problems.push(Unsupported { node: label, op: node.op_type.clone(), reason });
                self.poison_outputs(node);
                Ok(())
            }
            Err(FrontendError::UnsupportedList(list)) => {
                self.problems.extend(list);
                self.poison_outputs(node);
                Ok(())
            }
            Err(FrontendError::Invalid(msg)) => {
                Err(FrontendError::Invalid(format!("node '{label}' ({}): {msg}", node.op_type)))
            }
            Err(e) => Err(e),
        }
    }

    fn poison_outputs(&mut self, node: &NodeProto) {
        for out in &node.output {
            if !out.is_empty() {
                self.bind(out, Value::Poison);
            }
        }
    }

    /// Inline a model-local function call.
    fn inline_function(&mut self, f: &'m FunctionProto, call: &NodeCtx) -> Result<Vec<Value>, FrontendError> {
        let mut attrs: HashMap<String, AttributeProto> = HashMap::new();
        for a in &f.attribute_proto {
            attrs.insert(a.name.clone(), a.clone());
        }
        for a in &call.node.attribute {
            attrs.insert(a.name.clone(), a.clone());
        }
        let saved_opsets = self.opsets.clone();
        for o in &f.opset_import {
            self.opsets.insert(o.domain.clone(), o.version);
        }
        self.scopes.push(HashMap::new());
        for (k, name) in f.input.iter().enumerate() {
            if let Some(Some(v)) = call.inputs.get(k) {
                self.bind(name, v.clone());
            }
        }
        let problems_before = self.problems.len();
        let mut result = Ok(());
        for node in &f.node {
            if let Err(e) = self.import_node(node, Some(&attrs)) {
                result = Err(e);
                break;
            }
        }
        let outs: Vec<Value> = f.output.iter().map(|o| self.lookup(o).unwrap_or(Value::Poison)).collect();
        self.scopes.pop();
        self.opsets = saved_opsets;
        result?;
        if self.problems.len() > problems_before {
            let list = self.problems.split_off(problems_before);
            return Err(FrontendError::UnsupportedList(list));
        }
        Ok(outs)
    }

    /// Import a subgraph (If branch, Loop/Scan body) with its formal inputs bound to `args`.
    /// Outer-scope names stay visible.
    pub fn import_subgraph(&mut self, g: &GraphProto, args: &[Value]) -> Result<Vec<Value>, FrontendError> {
        self.scopes.push(HashMap::new());
        let r = (|| {
            self.bind_initializers(g)?;
            for (i, inp) in g.input.iter().enumerate() {
                if let Some(v) = args.get(i) {
                    self.bind(&inp.name, v.clone());
                }
            }
            let problems_before = self.problems.len();
            for node in &g.node {
                self.import_node(node, None)?;
            }
            if self.problems.len() > problems_before {
                let list = self.problems.split_off(problems_before);
                return Err(FrontendError::UnsupportedList(list));
            }
            g.output
                .iter()
                .map(|o| {
                    self.lookup(&o.name)
                        .ok_or_else(|| FrontendError::Invalid(format!("subgraph output '{}' is not produced", o.name)))
                })
                .collect()
        })();
        self.scopes.pop();
        r
    }

    /// A fresh name for values created during unrolling.
    pub fn fresh_name(&mut self, base: &str) -> String {
        self.fresh += 1;
        format!("{base}#{}", self.fresh)
    }

    pub fn subgraph_input_types(g: &GraphProto) -> Vec<Option<TypeProto>> {
        g.input.iter().map(|i| i.type_.as_ref().cloned()).collect()
    }
}

/// Operators (in the main graph and all subgraphs) that odc has no importer for. Needs no shapes.
pub fn unknown_operators(model: &ModelProto) -> Vec<Unsupported> {
    let local: std::collections::HashSet<(String, String)> =
        model.functions.iter().map(|f| (f.domain.clone(), f.name.clone())).collect();
    let mut out = vec![];
    fn walk(g: &GraphProto, local: &std::collections::HashSet<(String, String)>, out: &mut Vec<Unsupported>) {
        for node in &g.node {
            let domain = if node.domain == "ai.onnx" { "" } else { node.domain.as_str() };
            if ops::lookup(domain, &node.op_type).is_none() && !local.contains(&(node.domain.clone(), node.op_type.clone())) {
                let dom = if domain.is_empty() { String::new() } else { format!("{domain}.") };
                out.push(Unsupported {
                    node: Importer::node_label(node),
                    op: node.op_type.clone(),
                    reason: format!("operator {dom}{} is not supported", node.op_type),
                });
            }
            for a in &node.attribute {
                if let Some(sub) = a.g.as_ref() {
                    walk(sub, local, out);
                }
                for sub in &a.graphs {
                    walk(sub, local, out);
                }
            }
        }
    }
    walk(&model.graph, &local, &mut out);
    out
}
