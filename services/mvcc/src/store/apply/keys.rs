//! Puts, deletes and compaction: what changes keys, their leases and the
//! key and revision indexes.

use super::*;

impl Change<'_> {
    /// etcd's checks at apply time: the lease must exist, and the ignore
    /// flags need a key to take the value or lease from.
    pub(super) fn check_put(&self, put: &PutRequest) -> Result<(), MvccError> {
        if put.lease != 0 && !self.state.leases.contains_key(&put.lease) {
            return Err(EtcdError::LeaseNotFound.into());
        }
        let needs_key = put.ignore_value || put.ignore_lease;
        if needs_key && self.state.tree.get(&put.key, self.read_at()).is_none() {
            return Err(EtcdError::KeyNotFound.into());
        }
        Ok(())
    }

    pub(super) fn put(&mut self, put: &PutRequest) -> Result<PutResponse, MvccError> {
        let previous = self.live(&put.key)?;
        let revision = self.next_revision();
        let value = match (&previous, put.ignore_value) {
            (Some(previous), true) => previous.value.clone(),
            _ => put.value.clone(),
        };
        let lease = match (&previous, put.ignore_lease) {
            (Some(previous), true) => previous.lease,
            _ => put.lease,
        };
        let (created, version) = match &previous {
            Some(previous) => (previous.create_revision, previous.version + 1),
            None => (self.main, 1),
        };
        let kv = KeyValue {
            key: put.key.clone(),
            create_revision: created,
            mod_revision: self.main,
            version,
            value,
            lease,
        };
        self.state
            .tree
            .put(&put.key, revision)
            .map_err(|error| MvccError::Corrupt(format!("key index: {error}")))?;
        let created_at = self
            .state
            .tree
            .get(&put.key, self.main)
            .map_or(revision, |found| found.created);
        let old_lease = previous.as_ref().map_or(0, |previous| previous.lease);
        if old_lease != lease {
            self.detach(old_lease, &put.key)?;
            self.attach(lease, &put.key)?;
        }
        self.write(
            revision,
            Record {
                tombstone: false,
                kv: kv.clone(),
            },
            created_at,
            version,
        )?;
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: previous.clone(),
        });
        Ok(PutResponse {
            header: None,
            prev_kv: if put.prev_kv { previous } else { None },
        })
    }

    pub(super) fn delete_range(
        &mut self,
        delete: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let at = self.read_at();
        let doomed: Vec<Vec<u8>> = self
            .state
            .tree
            .range(&KeyRange::new(&delete.key, &delete.range_end), at)
            .map(|(key, _)| key.to_vec())
            .collect();
        let mut prev_kvs = Vec::new();
        for key in &doomed {
            let previous = self.delete_key(key)?;
            if delete.prev_kv {
                prev_kvs.extend(previous);
            }
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs,
        })
    }

    /// Deletes one live key; returns what it was.
    pub(super) fn delete_key(&mut self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        let previous = self.live(key)?;
        let Some(previous_kv) = previous.clone() else {
            return Ok(None);
        };
        let revision = self.next_revision();
        self.state
            .tree
            .tombstone(key, revision)
            .map_err(|error| MvccError::Corrupt(format!("key index: {error}")))?;
        self.detach(previous_kv.lease, key)?;
        let tombstone = KeyValue {
            key: key.to_vec(),
            mod_revision: self.main,
            ..Default::default()
        };
        self.write(
            revision,
            Record {
                tombstone: true,
                kv: tombstone.clone(),
            },
            revision,
            0,
        )?;
        // etcd's event carries the key as it was before this revision, even
        // when an earlier op of the same txn wrote it.
        let before = match self.state.tree.get(key, self.main - 1) {
            Some(found) => Some(self.record(found.modified)?.kv),
            None => None,
        };
        self.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(tombstone),
            prev_kv: before,
        });
        Ok(Some(previous_kv))
    }

    pub(super) fn attach(&mut self, lease: i64, key: &[u8]) -> Result<(), MvccError> {
        if lease == 0 {
            return Ok(());
        }
        let family = family(self.db, schema::LEASE_KEYS)?;
        self.state
            .lease_keys
            .entry(lease)
            .or_default()
            .insert(key.to_vec());
        self.batch
            .put_cf(family, schema::lease_key_row(lease, key), []);
        Ok(())
    }

    pub(super) fn detach(&mut self, lease: i64, key: &[u8]) -> Result<(), MvccError> {
        if lease == 0 {
            return Ok(());
        }
        let family = family(self.db, schema::LEASE_KEYS)?;
        if let Some(keys) = self.state.lease_keys.get_mut(&lease) {
            keys.remove(key);
            if keys.is_empty() {
                self.state.lease_keys.remove(&lease);
            }
        }
        self.batch
            .delete_cf(family, schema::lease_key_row(lease, key));
        Ok(())
    }

    pub(super) fn compact(
        &mut self,
        request: &CompactionRequest,
    ) -> Result<CompactionResponse, MvccError> {
        let at = request.revision;
        if at <= self.state.compacted {
            return Err(MvccError::Compacted {
                compact_revision: self.state.compacted,
            });
        }
        if at > self.state.current {
            return Err(EtcdError::FutureRevision.into());
        }
        let kept = self.state.tree.compact(at);
        let revs = family(self.db, schema::REVS)?;
        let keys = family(self.db, schema::KEYS)?;
        let end = Revision::new(at, i64::MAX).to_key();
        let mut doomed: Vec<(Revision, Vec<u8>)> = Vec::new();
        for item in self.db.iterator_cf(revs, IteratorMode::Start) {
            let (key, value) = item?;
            if key.as_ref() > end.as_slice() {
                break;
            }
            let revision = Revision::from_key(&key)
                .ok_or_else(|| MvccError::Corrupt("revision index key".into()))?;
            if !kept.contains(&revision) {
                doomed.push((revision, Record::decode(&value)?.kv.key));
            }
        }
        for (revision, record) in self.overlay.iter() {
            if revision.main <= at && !kept.contains(revision) {
                doomed.push((*revision, record.kv.key.clone()));
            }
        }
        for (revision, key) in doomed {
            self.batch.delete_cf(revs, revision.to_key());
            self.batch.delete_cf(keys, KeyRow::row_key(&key, revision));
            self.overlay.remove(&revision);
        }
        self.state.compacted = at;
        Ok(CompactionResponse { header: None })
    }
}
