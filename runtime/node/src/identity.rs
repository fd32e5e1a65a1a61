//! Who a node is: its Ed25519 key, the node id records carry, and the fleet list it
//! trusts — verified once, when the identity is made, and borrowed from then on.

use cairn_sync::fleet::Fleet;
use ed25519_dalek::SigningKey;

use crate::NodeError;

#[derive(Clone)]
pub struct Identity<'f> {
    key: SigningKey,
    public: [u8; 32],
    node_id: u64,
    fleet: Fleet<'f>,
}

impl<'f> Identity<'f> {
    /// `seed`: the node's 32-byte Ed25519 seed; `fleet`: the membership list, which must
    /// verify against `authority` (the fleet authority's public key).
    pub fn new(seed: &[u8; 32], fleet: &'f [u8], authority: &[u8; 32]) -> Result<Self, NodeError> {
        let fleet = Fleet::verify(fleet, authority).map_err(NodeError::Fleet)?;
        let key = SigningKey::from_bytes(seed);
        let public = key.verifying_key().to_bytes();
        Ok(Identity {
            node_id: cairn_sync::item::node_id(&public),
            key,
            public,
            fleet,
        })
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }
    /// The 8-byte id this node's records carry as their origin.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }
    pub fn fleet(&self) -> Fleet<'f> {
        self.fleet
    }
    /// Whether the fleet list admits this node (a node outside it can sign, but no member
    /// stores what it signs or opens a session with it).
    pub fn is_member(&self) -> bool {
        self.fleet.contains(&self.public)
    }
}
