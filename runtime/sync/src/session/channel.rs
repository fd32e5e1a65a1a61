//! The reliable ordered channel: the out-queue of messages, cutting the message stream into
//! frames, retransmission, acks, and taking frames in (AEAD, order, replays).

use super::*;

impl<S: Store> Session<'_, S> {
    // ---- out-queue and fragmentation --------------------------------------------------

    pub(super) fn push_msg(&mut self, m: &[u8], handshake: bool) -> Result<(), Reject> {
        if m.len() > MAX_MSG || self.outq.free() < 5 + m.len() {
            return Err(Reject::TooLarge);
        }
        self.outq.extend(&[hs_flag(handshake)]);
        self.outq.extend(&(m.len() as u32).to_le_bytes());
        self.outq.extend(m);
        Ok(())
    }

    /// Load the next message to fragment, if any: queued messages first, then item chunks,
    /// then Done.
    pub(super) fn next_message(&mut self) -> bool {
        if self.frag_off < self.frag.len() {
            return true;
        }
        self.frag.clear();
        self.frag_off = 0;
        if self.outq.len() >= 5 {
            let q = self.outq.as_slice();
            let hs = q[0] != 0;
            let len = u32::from_le_bytes([q[1], q[2], q[3], q[4]]) as usize;
            self.frag.extend(&(len as u16).to_le_bytes());
            self.frag.extend(&q[5..5 + len]);
            self.outq.consume(5 + len);
            self.frag_hs = hs;
            return true;
        }
        if self.state != State::Open {
            return false;
        }
        if self.held.is_some() {
            self.resume_held();
            self.drain_inbuf();
            if !self.outq.is_empty() {
                return self.next_message();
            }
        }
        if self.item_chunk() {
            return true;
        }
        if self.recon_done
            && self.sendq.is_empty()
            && self.wants.is_empty()
            && self.held.is_none()
            && !self.done_sent
        {
            self.done_sent = true;
            self.frag.extend(&[1, 0, T_DONE]);
            self.frag_hs = false;
            return true;
        }
        false
    }

    /// The next frame to send into `out` (at least the MTU long); its length.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        if out.len() < self.cfg.mtu {
            return None;
        }
        if self.state == State::Closed {
            // Lingering after completion: acknowledge what the peer still retransmits.
            return if self.need_ack {
                self.ack_frame(out)
            } else {
                None
            };
        }
        // Retransmissions first.
        if let Some(i) = self.ring.as_slice().iter().position(|s| !s.sent) {
            let slot = &mut self.ring.as_mut_slice()[i];
            slot.sent = true;
            let n = slot.frame.len();
            out[..n].copy_from_slice(slot.frame.as_slice());
            return Some(self.sent(n));
        }
        if self.ring.len() < WINDOW && self.next_message() {
            let hs = self.frag_hs;
            if !hs && self.send.is_none() {
                return None;
            }
            // Fill the frame from the message stream; a frame never mixes plaintext
            // handshake bytes with encrypted ones.
            let room = self.cfg.mtu - HEADER - if hs { 0 } else { TAG };
            let mut n = 0;
            while n < room && self.next_message() && self.frag_hs == hs {
                let rest = self.frag.len() - self.frag_off;
                let k = rest.min(room - n);
                out[HEADER + n..HEADER + n + k]
                    .copy_from_slice(&self.frag.as_slice()[self.frag_off..self.frag_off + k]);
                self.frag_off += k;
                n += k;
            }
            let h = Header {
                flags: if hs { F_HANDSHAKE } else { 0 },
                seq: self.next_seq,
                ack: self.expected,
                len: n as u16,
            };
            h.write(&mut out[..HEADER]);
            let total = HEADER + n + if hs { 0 } else { TAG };
            if !hs {
                let c = self.send.as_ref()?;
                if c.seal(&mut out[..total]).is_err() {
                    return None;
                }
            }
            self.next_seq = self.next_seq.wrapping_add(1);
            let mut frame = Buf::new();
            frame.extend(&out[..total]);
            self.ring.push(Slot {
                seq: h.seq,
                sent: true,
                frame,
            });
            self.need_ack = false;
            return Some(self.sent(total));
        }
        if self.need_ack {
            return self.ack_frame(out);
        }
        self.check_complete();
        None
    }

    pub(super) fn ack_frame(&mut self, out: &mut [u8]) -> Option<usize> {
        let c = self.send.as_ref()?;
        self.ack_ctr = self.ack_ctr.wrapping_add(1);
        let h = Header {
            flags: F_ACK,
            seq: self.ack_ctr,
            ack: self.expected,
            len: 0,
        };
        h.write(&mut out[..HEADER]);
        if c.seal(&mut out[..HEADER + TAG]).is_err() {
            return None;
        }
        self.need_ack = false;
        Some(self.sent(HEADER + TAG))
    }

    pub(super) fn sent(&mut self, n: usize) -> usize {
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += n as u64;
        self.last_send = self.now;
        n
    }

    /// When to call [`Session::handle_timeout`] next (ms), if anything is in flight.
    pub fn poll_timeout(&self) -> Option<u64> {
        (!self.ring.is_empty() && self.state != State::Closed)
            .then_some(self.last_send + self.cfg.rto_ms)
    }

    /// Time passed: retransmit what is unacknowledged after the RTO (go-back-N).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.now = now_ms;
        if !self.ring.is_empty() && now_ms >= self.last_send + self.cfg.rto_ms {
            for s in self.ring.as_mut_slice() {
                s.sent = false;
            }
            self.stats.retransmits += 1;
        }
    }

    pub(super) fn check_complete(&mut self) {
        if self.state == State::Open
            && self.done_sent
            && self.done_recv
            && self.ring.is_empty()
            && self.frag_off >= self.frag.len()
            && self.outq.is_empty()
            && self.sendq.is_empty()
        {
            self.state = State::Closed;
            self.need_ack = true;
            self.event(Event::Complete);
        }
    }

    // ---- input -------------------------------------------------------------------------

    /// One received frame. Refusals are counted and reported as events; the session goes
    /// on unless the refusal makes that impossible (then it closes, with an event).
    pub fn handle_input(&mut self, frame: &[u8], now_ms: u64) -> Result<(), Reject> {
        self.now = now_ms;
        let closed = self.state == State::Closed;
        let r = self.input(frame);
        if let Err(e) = r {
            if closed {
                self.stats.rejected[e as usize] += 1;
            } else {
                self.reject(e);
            }
        }
        self.check_complete();
        r
    }

    pub(super) fn input(&mut self, frame: &[u8]) -> Result<(), Reject> {
        if self.state == State::Closed && self.recv.is_none() {
            return Err(Reject::Protocol);
        }
        if frame.len() > MAX_FRAME {
            return Err(Reject::TooLarge);
        }
        self.stats.frames_received += 1;
        self.stats.bytes_received += frame.len() as u64;
        let h = Header::parse(frame)?;
        let mut scratch: Buf<MAX_FRAME> = Buf::new();
        scratch.extend(frame);
        if h.flags & F_HANDSHAKE != 0 {
            if self.state != State::Handshake || h.flags & F_ACK != 0 {
                return Err(Reject::Protocol);
            }
        } else {
            let c = self.recv.as_ref().ok_or(Reject::Protocol)?;
            c.open(scratch.as_mut_slice())?;
        }
        // Cumulative ack.
        let acked = h.ack;
        let in_flight = self.next_seq.wrapping_sub(acked);
        if in_flight <= self.ring.len() as u32 {
            let mut i = 0;
            while i < self.ring.len() {
                if acked.wrapping_sub(self.ring.as_slice()[i].seq) as i32 > 0 {
                    self.ring.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        if self.state == State::Closed {
            // Complete (or closed) but the peer retransmits: it missed our last ack.
            if h.flags & (F_ACK | F_HANDSHAKE) == 0 {
                self.need_ack = true;
            }
            return Ok(());
        }
        if h.flags & F_ACK != 0 {
            if h.seq.wrapping_sub(self.peer_ack_ctr) as i32 <= 0 {
                return Err(Reject::Replay);
            }
            self.peer_ack_ctr = h.seq;
            return Ok(());
        }
        if h.seq != self.expected {
            self.need_ack = true;
            return Err(if (h.seq.wrapping_sub(self.expected) as i32) < 0 {
                Reject::Replay
            } else {
                Reject::OutOfOrder
            });
        }
        if self.held.is_some() {
            // Busy with a paused message: the peer retransmits this later.
            return Ok(());
        }
        self.expected = self.expected.wrapping_add(1);
        self.need_ack = true;
        let body = &scratch.as_slice()[HEADER..HEADER + h.len as usize];
        if !self.inbuf.extend(body) {
            self.close(Reject::TooLarge);
            return Err(Reject::TooLarge);
        }
        self.drain_inbuf();
        Ok(())
    }

    /// Fuzzing only: bytes as if they had arrived in order inside authenticated frames.
    #[cfg(feature = "fuzzing")]
    pub fn inject_stream(&mut self, bytes: &[u8]) {
        if self.state == State::Open && self.inbuf.extend(bytes) {
            self.drain_inbuf();
        }
    }

    /// Cut complete messages off the received stream and handle them, until one is held.
    pub(super) fn drain_inbuf(&mut self) {
        while self.held.is_none() && self.state != State::Closed {
            let b = self.inbuf.as_slice();
            if b.len() < 2 {
                return;
            }
            let len = u16::from_le_bytes([b[0], b[1]]) as usize;
            if len > MAX_MSG {
                return self.close(Reject::TooLarge);
            }
            if b.len() < 2 + len {
                return;
            }
            self.msg.clear();
            self.msg.extend(&b[2..2 + len]);
            self.inbuf.consume(2 + len);
            self.on_message();
        }
    }

    pub(super) fn on_message(&mut self) {
        let m = self.msg.as_slice();
        let Some((&tag, _)) = m.split_first() else {
            self.msg.clear();
            return self.reject(Reject::Malformed);
        };
        if self.state == State::Handshake {
            if tag != T_HELLO {
                self.msg.clear();
                return self.close(Reject::Protocol);
            }
            let mut body = [0u8; HELLO_LEN];
            let ok = m.len() == 1 + HELLO_LEN;
            if ok {
                body.copy_from_slice(&m[1..]);
            }
            self.msg.clear();
            if !ok {
                return self.close(Reject::Malformed);
            }
            return self.on_hello(&body);
        }
        match tag {
            T_RECON => {
                let Ok((head, rest)) = postcard::take_from_bytes::<ReconHead>(&m[1..]) else {
                    self.msg.clear();
                    return self.reject(Reject::Malformed);
                };
                if !head.from.valid() {
                    self.msg.clear();
                    return self.reject(Reject::Malformed);
                }
                let pos = m.len() - rest.len();
                self.held = Some(ReconIn {
                    pos,
                    left: head.count,
                    lower: head.from,
                    last: head.last,
                });
                self.resume_held();
                return;
            }
            T_WANT => match postcard::from_bytes::<heapless::Vec<Want, MAX_WANTS>>(&m[1..]) {
                Ok(ws) => {
                    for w in ws {
                        self.queue_prefix(w.id, w.offset);
                    }
                }
                Err(_) => self.reject(Reject::Malformed),
            },
            T_ITEM => self.on_item_chunk(),
            T_DONE => self.done_recv = true,
            T_CLOSE => {
                self.msg.clear();
                return self.close(Reject::PeerClosed);
            }
            _ => self.reject(Reject::Malformed),
        }
        self.msg.clear();
    }
}
