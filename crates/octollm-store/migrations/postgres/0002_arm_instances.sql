-- Arm instances that registered themselves (ARM_REGISTRY_URL), shared by every orchestrator
-- replica whichever one took the registration; a registration lapses at expires_at (Unix ms)
-- unless the instance renews it.
CREATE TABLE arm_instances (
    arm           TEXT NOT NULL,
    url           TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (arm, url)
);
