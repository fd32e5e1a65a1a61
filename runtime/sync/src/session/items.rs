//! Items: the send queue in value order, chunks with offsets (resumable), reassembly and
//! verification of what arrives.

use super::*;

impl<S: Store> Session<'_, S> {
    // ---- items -------------------------------------------------------------------------

    pub(super) fn queue_send(&mut self, id: Id, offset: u32) {
        if self.store.item_len(&id).is_none() || self.budget_hit {
            return;
        }
        // Reconciliation names each id once; only a resumed item (a Want with an offset)
        // can already be queued, so the linear scan runs only once one exists.
        if self.resumed || offset > 0 {
            if let Some(e) = self.sendq.as_mut_slice().iter_mut().find(|e| e.0 == id) {
                e.1 = offset.max(e.1);
                return;
            }
        }
        self.resumed |= offset > 0;
        if self.sendq.push((id, offset)) {
            self.sendq_dirty = true;
        }
        // A full queue leaves the rest for the next session (reconciliation finds it again).
    }

    /// Next chunk of the most valuable queued item into `frag`.
    pub(super) fn item_chunk(&mut self) -> bool {
        if self.sendq.is_empty() {
            return false;
        }
        if self.sendq_dirty {
            // Most valuable first; the item in progress (offset > 0) stays in front.
            let st = &self.store;
            self.sendq
                .as_mut_slice()
                .sort_unstable_by_key(|e| (e.1 == 0, core::cmp::Reverse(st.value(&e.0))));
            self.sendq_dirty = false;
        }
        let (id, offset) = self.sendq.as_slice()[0];
        let Some(total) = self.store.item_len(&id) else {
            self.sendq.remove(0);
            return self.item_chunk();
        };
        if offset == 0 {
            let len = total as u64;
            if self.stats.item_bytes_sent + len > self.cfg.byte_budget {
                self.sendq.clear();
                self.budget_hit = true;
                self.event(Event::BudgetExhausted);
                return false;
            }
        }
        let offset = (offset as usize).min(total);
        let n = (total - offset).min(CHUNK);
        let head = ItemHead {
            id,
            offset: offset as u32,
            total: total as u32,
        };
        self.frag.clear();
        self.frag.extend(&[0, 0, T_ITEM]);
        let mut b = [0u8; 48];
        let hn = postcard::to_slice(&head, &mut b).map_or(0, |s| s.len());
        self.frag.extend(&b[..hn]);
        let at = self.frag.len();
        self.frag.resize(at + n);
        let got = self
            .store
            .read(&id, offset, &mut self.frag.as_mut_slice()[at..at + n]);
        self.frag.resize(at + got);
        let len = (self.frag.len() - 2) as u16;
        self.frag.as_mut_slice()[..2].copy_from_slice(&len.to_le_bytes());
        self.frag_off = 0;
        self.frag_hs = false;
        self.stats.item_bytes_sent += got as u64;
        if offset + got >= total || got == 0 {
            self.sendq.remove(0);
            self.stats.items_sent += 1;
        } else {
            self.sendq.as_mut_slice()[0].1 = (offset + got) as u32;
        }
        true
    }

    pub(super) fn on_item_chunk(&mut self) {
        let m = self.msg.as_slice();
        let Ok((head, data)) = postcard::take_from_bytes::<ItemHead>(&m[1..]) else {
            return self.reject(Reject::Malformed);
        };
        let total = head.total as usize;
        // `offset` is untrusted: `offset + len` could wrap on 32 bits.
        if total > MAX_ITEM || data.len() > total || head.offset as usize > total - data.len() {
            return self.reject(Reject::TooLarge);
        }
        if head.offset == 0 {
            self.partial.clear();
            self.partial_id = Some((head.id, head.total));
        } else if self.partial_id != Some((head.id, head.total))
            || self.partial.len() != head.offset as usize
        {
            return self.reject(Reject::OutOfOrder);
        }
        let mut chunk: Buf<MAX_MSG> = Buf::new();
        chunk.extend(data);
        self.partial.extend(chunk.as_slice());
        if self.partial.len() < total {
            return;
        }
        self.partial_id = None;
        let bytes: Buf<MAX_ITEM> = core::mem::take(&mut self.partial);
        let r = self.accept(&head.id, bytes.as_slice());
        self.partial = bytes;
        self.partial.clear();
        match r {
            Ok(new) => {
                self.stats.items_received += 1;
                self.event(Event::Stored { id: head.id, new });
                // A revocation of the peer itself, relayed by it or arrived otherwise:
                // nothing more is taken from this session.
                if self.peer.is_some_and(|p| self.store.revoked(&p)) {
                    self.close(Reject::Revoked);
                }
            }
            Err(e) => self.reject(e),
        }
    }

    /// Verify an item (signature, id, fleet membership or authority, base model) and store
    /// it (the store refuses revoked origins and tombstones that do not apply).
    pub(super) fn accept(&mut self, id: &Id, bytes: &[u8]) -> Result<bool, Reject> {
        let item = Item::verify(bytes)?;
        if &item.id != id {
            return Err(Reject::Forged);
        }
        self.cfg.fleet.admits(&item)?;
        if item.kind == Kind::Contribution
            && item.contribution().map(|c| c.base) != Some(self.cfg.base_model)
        {
            return Err(Reject::WrongBaseModel);
        }
        self.store.insert(&item)
    }
}
