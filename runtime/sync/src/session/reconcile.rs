//! Reconciliation turns: answering a peer's ranges (skip, fingerprint, id list) and building
//! our own turn, flushed as Recon messages.

use super::*;

impl<S: Store> Session<'_, S> {
    // ---- reconciliation ----------------------------------------------------------------

    pub(super) fn start_recon(&mut self) {
        self.begin_out(Bound::ZERO);
        let n = self.store.ids().len();
        if n <= LIST_MAX {
            self.out_ids(Bound::INF, 0, n);
        } else {
            let parts = if n >= FIRST_BUCKETS * LIST_MAX * BUCKETS {
                FIRST_BUCKETS
            } else {
                BUCKETS
            };
            self.out_split(Bound::INF, 0, n, parts);
        }
        self.end_turn();
    }

    pub(super) fn begin_out(&mut self, from: Bound) {
        self.out.msg.clear();
        self.out.count = 0;
        self.out.from = from;
        self.out.skip_upto = None;
        self.out.open = true;
    }

    /// Append one range to the output turn, flushing the message when it is full.
    pub(super) fn out_range(&mut self, r: &Range) {
        let mut b = [0u8; 40 + LIST_MAX * 8];
        let Ok(enc) = postcard::to_slice(r, &mut b) else {
            return;
        };
        let n = enc.len();
        // Room for the tag and the head (tag, bound ≤ 18, last, count).
        if self.out.count == u8::MAX || 1 + 21 + self.out.msg.len() + n > MAX_MSG {
            let from = self.out_lower();
            self.flush_out(false);
            self.begin_out(from);
        }
        self.out.msg.extend(&b[..n]);
        self.out.count += 1;
    }

    /// Lower bound of the next range to be appended (the last range's upper bound).
    pub(super) fn out_lower(&self) -> Bound {
        self.last_upper.unwrap_or(self.out.from)
    }

    pub(super) fn emit_skip(&mut self) {
        if let Some(up) = self.out.skip_upto.take() {
            self.out_range(&Range {
                upper: up,
                mode: Mode::Skip,
            });
            self.last_upper = Some(up);
        }
    }

    pub(super) fn out_skip(&mut self, upper: Bound) {
        self.out.skip_upto = Some(upper);
    }

    pub(super) fn out_fp(&mut self, upper: Bound, fp: [u8; crate::recon::FP]) {
        self.emit_skip();
        self.out.nonskip = true;
        self.out_range(&Range {
            upper,
            mode: Mode::Fingerprint(fp),
        });
        self.last_upper = Some(upper);
    }

    pub(super) fn out_ids(&mut self, upper: Bound, lo: usize, hi: usize) {
        self.emit_skip();
        self.out.nonskip = true;
        let mut v: heapless::Vec<Prefix, LIST_MAX> = heapless::Vec::new();
        for id in &self.store.ids()[lo..hi] {
            let _ = v.push(prefix(id));
        }
        self.out_range(&Range {
            upper,
            mode: Mode::Ids(v),
        });
        self.last_upper = Some(upper);
    }

    /// Fingerprints of `parts` parts of own ids `lo..hi`, the last ending at `upper`.
    pub(super) fn out_split(&mut self, upper: Bound, lo: usize, hi: usize, parts: usize) {
        let n = hi - lo;
        for b in 0..parts {
            let s = lo + b * n / parts;
            let e = lo + (b + 1) * n / parts;
            let ids = self.store.ids();
            let up = if b + 1 == parts {
                upper
            } else {
                Bound::between(&ids[e - 1], &ids[e])
            };
            let fp = fingerprint(&ids[s..e]);
            self.out_fp(up, fp);
        }
    }

    pub(super) fn flush_out(&mut self, last: bool) {
        self.flush_wants();
        let head = ReconHead {
            from: self.out.from,
            last,
            count: self.out.count,
        };
        let mut hb = [0u8; 32];
        let hn = postcard::to_slice(&head, &mut hb[1..]).map_or(0, |x| x.len());
        hb[0] = T_RECON;
        let len = 1 + hn + self.out.msg.len();
        if len > MAX_MSG || self.outq.free() < 5 + len {
            self.close(Reject::TooLarge);
        } else {
            self.outq.extend(&[0]);
            self.outq.extend(&(len as u32).to_le_bytes());
            self.outq.extend(&hb[..1 + hn]);
            self.outq.extend(self.out.msg.as_slice());
        }
        self.out.msg.clear();
        self.out.count = 0;
        self.out.open = false;
        self.stats.recon_messages += 1;
    }

    /// Close the output turn: trailing skips, `last`, and whether reconciliation is over.
    pub(super) fn end_turn(&mut self) {
        if self.out.skip_upto.is_some() {
            self.emit_skip();
        }
        if self.out.count == 0 {
            // An empty turn still answers: one Skip to infinity.
            let r = Range {
                upper: Bound::INF,
                mode: Mode::Skip,
            };
            self.out_range(&r);
        }
        let nonskip = self.out.nonskip;
        self.flush_out(true);
        self.stats.recon_turns += 1;
        self.out.nonskip = false;
        self.last_upper = None;
        if !nonskip {
            self.recon_done = true;
        }
    }

    /// Process ranges of the held message while the out-queue has room.
    pub(super) fn resume_held(&mut self) {
        while let Some(mut st) = self.held {
            if st.left == 0 {
                self.held = None;
                self.msg.clear();
                if st.last {
                    let answer = self.recv_turn_nonskip;
                    self.recv_turn_nonskip = false;
                    if answer {
                        self.end_turn();
                    } else {
                        // The peer's turn matched everything: nothing left to reconcile.
                        self.recon_done = true;
                        self.out.msg.clear();
                        self.out.count = 0;
                        self.out.open = false;
                        self.out.skip_upto = None;
                        self.last_upper = None;
                    }
                }
                return;
            }
            if self.outq.free() < RANGE_ROOM {
                return; // resumed from poll_transmit once the queue drains
            }
            if !self.out.open {
                self.begin_out(st.lower);
            }
            let m = self.msg.as_slice();
            let Ok((r, rest)) = postcard::take_from_bytes::<Range>(&m[st.pos..]) else {
                self.held = None;
                self.msg.clear();
                return self.reject(Reject::Malformed);
            };
            st.pos = m.len() - rest.len();
            st.left -= 1;
            let lower = st.lower;
            st.lower = r.upper;
            self.held = Some(st);
            if !r.upper.valid() {
                self.held = None;
                self.msg.clear();
                return self.reject(Reject::Malformed);
            }
            self.on_range(lower, &r);
        }
    }

    pub(super) fn on_range(&mut self, lower: Bound, r: &Range) {
        let ids = self.store.ids();
        let lo = lower_index(ids, &lower);
        let hi = lower_index(ids, &r.upper).max(lo);
        match &r.mode {
            Mode::Skip => self.out_skip(r.upper),
            Mode::Fingerprint(fp) => {
                self.recv_turn_nonskip = true;
                if fingerprint(&ids[lo..hi]) == *fp {
                    self.out_skip(r.upper);
                } else if hi - lo <= LIST_MAX {
                    self.out_ids(r.upper, lo, hi);
                } else {
                    self.out_split(r.upper, lo, hi, BUCKETS);
                }
            }
            Mode::Ids(list) => {
                self.recv_turn_nonskip = true;
                if list.windows(2).any(|w| w[0] > w[1]) {
                    return self.reject(Reject::Malformed);
                }
                // Merge-walk own ids (by prefix) against the sender's prefixes.
                let (mut i, mut j) = (lo, 0);
                while i < hi || j < list.len() {
                    let ids = self.store.ids();
                    let a = ids.get(i).filter(|_| i < hi).map(|x| (prefix(x), *x));
                    match (a, list.get(j).copied()) {
                        (Some((px, _)), Some(y)) if px == y => {
                            i += 1;
                            j += 1;
                        }
                        (Some((px, x)), Some(y)) if px < y => {
                            self.queue_send(x, 0);
                            i += 1;
                        }
                        (Some((_, x)), None) => {
                            self.queue_send(x, 0);
                            i += 1;
                        }
                        (_, Some(y)) => {
                            self.want(y);
                            j += 1;
                        }
                        (None, None) => break,
                    }
                }
                self.out_skip(r.upper);
            }
        }
    }

    pub(super) fn want(&mut self, id: Prefix) {
        let offset = match self.partial_id {
            Some((p, _)) if prefix(&p) == id => self.partial.len() as u32,
            _ => 0,
        };
        if !self.wants.push(Want { id, offset }) {
            self.flush_wants();
            self.wants.push(Want { id, offset });
        }
    }

    /// Queue every own item whose id starts with `p`.
    pub(super) fn queue_prefix(&mut self, p: Prefix, offset: u32) {
        let ids = self.store.ids();
        let start = ids.partition_point(|x| prefix(x) < p);
        let mut k = start;
        while let Some(&id) = self.store.ids().get(k) {
            if prefix(&id) != p {
                break;
            }
            self.queue_send(id, offset);
            k += 1;
        }
    }

    pub(super) fn flush_wants(&mut self) {
        if self.wants.is_empty() {
            return;
        }
        let mut v: heapless::Vec<Want, MAX_WANTS> = heapless::Vec::new();
        for w in self.wants.as_slice() {
            let _ = v.push(*w);
        }
        self.wants.clear();
        let mut b = [0u8; 1 + MAX_WANTS * 16 + 8];
        b[0] = T_WANT;
        let n = postcard::to_slice(&v, &mut b[1..]).map_or(0, |s| s.len());
        if self.push_msg(&b[..1 + n], false).is_err() {
            self.close(Reject::TooLarge);
        }
    }
}
