//! The static memory plan: every temporary gets an arena offset by liveness; an elementwise map
//! whose input dies at it writes over that input; a concatenation's in-place operands sit inside
//! its buffer.

use super::program::{BufferKind, Program, ARENA_ALIGN};
use super::Alias;
use std::collections::{HashMap, HashSet};

/// Place the temporaries in one arena by liveness (see [`odc_passes::memory`]). An elementwise
/// map whose input dies at it writes its output over that input (in place): the two share one
/// placement, live over the union of their lifetimes.
pub(super) fn plan_arena(prog: &mut Program, aliases: &[Alias]) {
    let n = prog.buffers.len();
    let mut first = vec![usize::MAX; n];
    let mut last = vec![0usize; n];
    for (s, step) in prog.steps.iter().enumerate() {
        for &b in &step.args {
            first[b] = first[b].min(s);
            last[b] = last[b].max(s);
        }
    }
    // A container lives from its members' first write to its or their last read; its members
    // are not allocated on their own.
    let mut is_member = vec![false; n];
    for a in aliases {
        if first[a.member] != usize::MAX {
            first[a.container] = first[a.container].min(first[a.member]);
            last[a.container] = last[a.container].max(last[a.member]);
        }
        is_member[a.member] = true;
    }
    let container: HashSet<usize> = aliases.iter().map(|a| a.container).collect();
    let is_temp: Vec<bool> = prog.buffers.iter().enumerate().map(|(b, buf)| matches!(buf.kind, BufferKind::Temp { .. }) && !is_member[b]).collect();
    let temp = |b: usize| is_temp[b];
    // In-place: `group[out] = group[input]` for maps whose input's last use is that map (never
    // over a container, whose bytes its members share; members are not `temp`, and no kernel
    // writes a container itself).
    let mut group: Vec<usize> = (0..n).collect();
    let elem_bytes = |b: usize| prog.buffers[b].dtype.bits();
    for (s, step) in prog.steps.iter().enumerate() {
        let out = step.args[0];
        if !temp(out) || first[out] != s || prog.steps.iter().filter(|t| t.args[0] == out).count() != 1 {
            continue;
        }
        let k = &prog.kernels[step.kernel];
        let donor = step.args.iter().enumerate().skip(1).find(|&(slot, &b)| {
            b != out
                && temp(b)
                && !container.contains(&b)
                && last[b] == s
                && prog.buffers[b].byte_len() == prog.buffers[out].byte_len()
                && elem_bytes(b) == elem_bytes(out)
                && step.args.iter().filter(|&&x| x == b).count() == 1
                && k.reads_only_at_store_index(slot as u32)
        });
        if let Some((_, &b)) = donor {
            let root = find(&mut group, b);
            group[out] = root;
        }
    }
    // One interval per group: the union of its members' lifetimes.
    let mut items = vec![];
    let mut index_of: HashMap<usize, usize> = HashMap::new();
    for b in 0..n {
        if !temp(b) || first[b] == usize::MAX {
            continue;
        }
        let r = find(&mut group, b);
        let i = *index_of.entry(r).or_insert_with(|| {
            items.push(odc_passes::memory::Interval { size: 0, start: usize::MAX, end: 0 });
            items.len() - 1
        });
        let it = &mut items[i];
        it.size = it.size.max(prog.buffers[b].byte_len());
        it.start = it.start.min(first[b]);
        it.end = it.end.max(last[b]);
    }
    let plan = odc_passes::memory::plan(&items, ARENA_ALIGN);
    for b in 0..n {
        if temp(b) && first[b] != usize::MAX {
            let r = find(&mut group, b);
            prog.buffers[b].kind = BufferKind::Temp { offset: plan.offsets[index_of[&r]] };
        }
    }
    for a in aliases {
        if let BufferKind::Temp { offset } = prog.buffers[a.container].kind {
            let at = offset + a.offset * prog.buffers[a.container].dtype.bits() / 8;
            prog.buffers[a.member].kind = BufferKind::Temp { offset: at };
        }
    }
    prog.arena_size = plan.total;
}

/// Union-find root with path halving.
fn find(group: &mut [usize], mut b: usize) -> usize {
    while group[b] != b {
        group[b] = group[group[b]];
        b = group[b];
    }
    b
}
