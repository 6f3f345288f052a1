//! Leases and the claim that fences cairn-lease: grants, revokes, and the
//! expiries and checkpoints only the claim in force may apply.

use super::*;

impl Change<'_> {
    pub(super) fn lease_grant(
        &mut self,
        grant: &LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, MvccError> {
        if grant.id <= 0 {
            return Err(EtcdError::LeaseNotFound.into());
        }
        if self.state.leases.contains_key(&grant.id) {
            return Err(EtcdError::LeaseExists.into());
        }
        let record = LeaseRecord {
            id: grant.id,
            ttl: grant.ttl,
            remaining_ms: 0,
        };
        self.store_lease(record)?;
        Ok(LeaseGrantResponse {
            header: None,
            id: grant.id,
            ttl: grant.ttl,
            error: String::new(),
        })
    }

    /// Removes the lease and deletes its keys, all in one revision.
    pub(super) fn lease_revoke(
        &mut self,
        revoke: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, MvccError> {
        if !self.revoke_lease(revoke.id)? {
            return Err(EtcdError::LeaseNotFound.into());
        }
        Ok(LeaseRevokeResponse { header: None })
    }

    /// Deletes a lease's keys at this command's revision and removes the
    /// lease; false if there is no such lease. Revoke and expire share it so
    /// an expiry is exactly a revoke.
    pub(super) fn revoke_lease(&mut self, id: i64) -> Result<bool, MvccError> {
        if !self.state.leases.contains_key(&id) {
            return Ok(false);
        }
        let keys: Vec<Vec<u8>> = self
            .state
            .lease_keys
            .get(&id)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            self.delete_key(&key)?;
        }
        let leases = family(self.db, schema::LEASES)?;
        self.batch.delete_cf(leases, schema::lease_key(id));
        self.state.leases.remove(&id);
        self.state.lease_keys.remove(&id);
        Ok(true)
    }

    /// Writes a lease record to the table and to the batch.
    pub(super) fn store_lease(&mut self, record: LeaseRecord) -> Result<(), MvccError> {
        let leases = family(self.db, schema::LEASES)?;
        self.batch
            .put_cf(leases, schema::lease_key(record.id), record.encode_to_vec());
        self.state.leases.insert(record.id, record);
        Ok(())
    }

    /// Makes `holder` the claim in force, in memory and in the batch.
    pub(super) fn store_holder(&mut self, holder: LeaseHolder) -> Result<(), MvccError> {
        let meta = family(self.db, schema::META)?;
        self.batch
            .put_cf(meta, schema::META_LEASE_HOLDER, holder.encode_to_vec());
        self.state.holder = holder;
        Ok(())
    }

    /// Whether `epoch` names the claim in force. Epoch 0 never does: before
    /// any claim nobody may expire or checkpoint.
    pub(super) fn in_force(&self, epoch: u64) -> bool {
        epoch != 0 && epoch == self.state.holder.epoch
    }

    /// The answer to a fenced command, with the claim in force after it.
    pub(super) fn fenced(&self, accepted: bool, expired: Vec<i64>) -> FencedResponse {
        FencedResponse {
            revision: 0,
            result: FencedResult {
                accepted,
                holder: Some(self.state.holder.clone()),
                expired,
            },
        }
    }

    /// A claim above the current epoch becomes the claim in force; any other
    /// is void, so of two claims with one epoch the first wins.
    pub(super) fn lease_claim(&mut self, claim: LeaseClaim) -> Result<FencedResponse, MvccError> {
        if claim.epoch <= self.state.holder.epoch {
            return Ok(self.fenced(false, Vec::new()));
        }
        self.store_holder(LeaseHolder {
            holder: claim.holder,
            epoch: claim.epoch,
            claim_index: self.index,
            checkpoint_index: self.index,
        })?;
        Ok(self.fenced(true, Vec::new()))
    }

    /// Revokes, under the claim in force, every listed lease that exists, all
    /// in one revision; unknown ids are skipped. Void under any other epoch.
    pub(super) fn lease_expire(
        &mut self,
        expire: &LeaseExpire,
    ) -> Result<FencedResponse, MvccError> {
        if !self.in_force(expire.epoch) {
            return Ok(self.fenced(false, Vec::new()));
        }
        let mut expired = Vec::new();
        for &id in &expire.ids {
            if self.revoke_lease(id)? {
                expired.push(id);
            }
        }
        Ok(self.fenced(true, expired))
    }

    /// Records, under the claim in force, each listed lease's remaining TTL
    /// and the checkpoint's log index (the holder's sign of life). Void under
    /// any other epoch; unknown ids are skipped.
    pub(super) fn lease_checkpoint(
        &mut self,
        checkpoint: &LeaseCheckpoint,
    ) -> Result<FencedResponse, MvccError> {
        if !self.in_force(checkpoint.epoch) {
            return Ok(self.fenced(false, Vec::new()));
        }
        for remaining in &checkpoint.leases {
            if let Some(&record) = self.state.leases.get(&remaining.id) {
                self.store_lease(LeaseRecord {
                    remaining_ms: remaining.remaining_ms,
                    ..record
                })?;
            }
        }
        let holder = LeaseHolder {
            checkpoint_index: self.index,
            ..self.state.holder.clone()
        };
        self.store_holder(holder)?;
        Ok(self.fenced(true, Vec::new()))
    }
}
