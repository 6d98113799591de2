//! The run order is data: steps carry their dependencies, any order that respects them computes
//! the same values, and one that does not is refused before code is generated.

use odc_backends::{lower, Device, FusionPlan, JitProgram, LowerOptions, OptLevel, Program};
use odc_ir::{BinaryOp, DType, Graph, Op, TensorType, UnaryOp};

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// `exp(x) + (-x)`, unfused: two independent kernels and the add that reads both.
fn two_branches() -> Program {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::F32, vec![64]));
    let a = g.add(Op::Unary(UnaryOp::Exp), &[x], "a").unwrap();
    let b = g.add(Op::Unary(UnaryOp::Neg), &[x], "b").unwrap();
    let c = g.add(Op::Binary(BinaryOp::Add), &[a, b], "c").unwrap();
    g.set_output("y", c);
    lower(&g, &FusionPlan::none(&g), &LowerOptions::default()).unwrap()
}

fn run(prog: Program) -> Vec<f32> {
    let x: Vec<u8> = (0..64).flat_map(|i| (i as f32 * 0.05 - 1.0).to_le_bytes()).collect();
    let jit = JitProgram::compile(prog, OptLevel::Speed).unwrap();
    f32s(&jit.run(&[&x]).unwrap()[0])
}

#[test]
fn steps_carry_their_device_and_dependencies() {
    let prog = two_branches();
    let names: Vec<&str> = prog.steps.iter().map(|s| prog.kernels[s.kernel].name.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let add = names.iter().position(|n| n.contains("add")).expect("an add kernel");
    let mut deps = prog.steps[add].deps.clone();
    deps.sort();
    assert_eq!(deps, (0..3).filter(|&i| i != add).collect::<Vec<_>>(), "the add waits for both branches");
    for (i, s) in prog.steps.iter().enumerate() {
        assert_eq!(s.device, Device::Cpu);
        if i != add {
            assert!(s.deps.is_empty(), "the branches are independent: {:?}", s.deps);
        }
    }
    assert_eq!(prog.order, vec![0, 1, 2]);
    prog.check_order().unwrap();
}

#[test]
fn any_order_respecting_the_dependencies_gives_the_same_values() {
    let want = run(two_branches());
    let mut swapped = two_branches();
    let add = swapped.steps.iter().position(|s| !s.deps.is_empty()).unwrap();
    let mut branches: Vec<usize> = (0..3).filter(|&i| i != add).collect();
    branches.reverse();
    swapped.order = branches.into_iter().chain([add]).collect();
    assert_ne!(swapped.order, vec![0, 1, 2]);
    assert_eq!(run(swapped), want);
}

#[test]
fn an_order_breaking_a_dependency_is_refused() {
    let mut prog = two_branches();
    let add = prog.steps.iter().position(|s| !s.deps.is_empty()).unwrap();
    prog.order = std::iter::once(add).chain((0..3).filter(|&i| i != add)).collect();
    let err = prog.check_order().unwrap_err().to_string();
    assert!(err.contains("depends on"), "{err}");
    let err = JitProgram::compile(prog, OptLevel::Speed).err().expect("refused").to_string();
    assert!(err.contains("depends on"), "{err}");
    let mut short = two_branches();
    short.order.pop();
    assert!(short.check_order().unwrap_err().to_string().contains("2 of 3"));
}
