//! etcd's alarms (NOSPACE), raised and disarmed through the log so every
//! replica agrees; and the claim of the replica that publishes revisions.

use super::*;

impl Change<'_> {
    /// Whether a NOSPACE alarm is raised: etcd then refuses what adds data.
    pub(super) fn out_of_space(&self) -> bool {
        self.state
            .alarms
            .iter()
            .any(|alarm| alarm.alarm == AlarmType::Nospace as i32)
    }

    /// Raises or disarms an alarm; the answer lists the alarms it changed.
    pub(super) fn alarm(&mut self, request: &AlarmRequest) -> Result<AlarmResponse, MvccError> {
        let member = AlarmMember {
            member_id: request.member_id,
            alarm: request.alarm,
        };
        let key = |alarm: &AlarmMember| (alarm.member_id, alarm.alarm);
        let mut changed = Vec::new();
        if request.action == AlarmAction::Activate as i32 {
            if request.alarm != AlarmType::None as i32
                && !self
                    .state
                    .alarms
                    .iter()
                    .any(|raised| key(raised) == key(&member))
            {
                self.state.alarms.push(member);
                self.state.alarms.sort_by_key(key);
                changed.push(member);
            }
        } else if request.action == AlarmAction::Deactivate as i32 {
            // etcd's disarm: NONE or member 0 matches every alarm.
            let matches = |raised: &AlarmMember| {
                (request.member_id == 0 || raised.member_id == request.member_id)
                    && (request.alarm == AlarmType::None as i32 || raised.alarm == request.alarm)
            };
            changed = self
                .state
                .alarms
                .iter()
                .copied()
                .filter(|raised| matches(raised))
                .collect();
            self.state.alarms.retain(|raised| !matches(raised));
        } else {
            changed = self.state.alarms.clone();
        }
        let meta = family(self.db, schema::META)?;
        let list = AlarmList {
            alarms: self.state.alarms.clone(),
        };
        self.batch
            .put_cf(meta, schema::META_ALARMS, list.encode_to_vec());
        Ok(AlarmResponse {
            header: None,
            alarms: changed,
        })
    }
}

impl Change<'_> {
    /// Makes `claim.holder` the publisher if `claim.epoch` is above the claim
    /// in force; of two claims of the same epoch the first wins.
    pub(super) fn publisher_claim(
        &mut self,
        claim: PublisherClaim,
    ) -> Result<PublisherClaimed, MvccError> {
        if claim.epoch <= self.state.publisher.epoch {
            return Ok(PublisherClaimed {
                accepted: false,
                publisher: self.state.publisher.clone(),
            });
        }
        let meta = family(self.db, schema::META)?;
        self.batch
            .put_cf(meta, schema::META_PUBLISHER, claim.encode_to_vec());
        self.state.publisher = claim;
        Ok(PublisherClaimed {
            accepted: true,
            publisher: self.state.publisher.clone(),
        })
    }
}
