-- Arm instances that registered themselves (ARM_REGISTRY_URL); a registration lapses at
-- expires_at (Unix ms) unless the instance renews it.
CREATE TABLE arm_instances (
    arm           TEXT NOT NULL,
    url           TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (arm, url)
);
