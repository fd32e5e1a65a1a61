//! The training plan's arithmetic: parameters per slot, the four parts of a slot, and the
//! arena a learner says it uses, on shapes with and without a frozen layer.

use cairn_learn::learner::arena_bytes;
use cairn_learn::{AdapterShape, Layout, Learner, Optimizer, TrainConfig};

fn shape(fin: usize, hidden: usize, rank: usize, classes: usize) -> AdapterShape {
    AdapterShape {
        fin,
        hidden,
        rank,
        classes,
        batch: 3,
    }
}

#[test]
fn a_slot_is_head_weights_bias_then_lora_a_and_b() {
    // A head over 7 features, 3 classes: 21 weights + 3 biases; no LoRA without a frozen
    // layer, whatever the rank says.
    let s = shape(7, 0, 2, 3);
    assert_eq!(s.head_in(), 7);
    assert_eq!(s.params(), 24);
    let l = Layout::new(s, &Optimizer::adam(0.01));
    assert_eq!(l.param_parts(), [(0, 21), (21, 3), (24, 0), (24, 0)]);
    // LoRA of rank 2 on a 7 → 5 frozen layer under a 5 → 3 head: 15 + 3, then A (2 × 7)
    // and B (5 × 2).
    let s = shape(7, 5, 2, 3);
    assert_eq!(s.head_in(), 5);
    assert_eq!(s.params(), 15 + 3 + 14 + 10);
    let l = Layout::new(s, &Optimizer::adam(0.01));
    assert_eq!(l.param_parts(), [(0, 15), (15, 3), (18, 14), (32, 10)]);
    // The parts tile the slot for other shapes too.
    for (fin, hidden, rank, classes) in [(3, 0, 0, 2), (4, 9, 1, 6), (16, 8, 4, 10)] {
        let s = shape(fin, hidden, rank, classes);
        let l = Layout::new(s, &Optimizer::adam(0.01));
        let mut at = 0;
        for (off, len) in l.param_parts() {
            assert_eq!(off, at, "{s:?}");
            at += len;
        }
        assert_eq!(at, s.params(), "{s:?}");
    }
}

#[test]
fn the_arena_a_learner_uses_is_the_one_it_asked_for() {
    for (hidden, opt) in [
        (0, Optimizer::adam(0.01)),
        (
            0,
            Optimizer::Sgd {
                lr: 0.1,
                momentum: 0.9,
            },
        ),
    ] {
        let s = shape(6, hidden, 0, 4);
        let cfg = TrainConfig {
            optimizer: opt,
            clip_norm: 0.0,
            weight_decay: 0.0,
            steps: 0,
            replay_per_batch: 0,
            lora_scale: 0.5,
            distill: 0.0,
            seed: 1,
        };
        let need = arena_bytes(s, &cfg);
        // The f32 plan plus one int8 scratch byte per feature.
        assert_eq!(need, Layout::new(s, &opt).bytes() + 6);
        let mut arena = vec![0u32; need.div_ceil(4) + 4];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut arena);
        let l = Learner::new(s, None, cfg, bytes).unwrap();
        assert_eq!(l.arena_bytes(), need);
    }
}
