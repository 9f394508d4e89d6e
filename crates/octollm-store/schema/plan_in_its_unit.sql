-- A task's plan is the output of its plan unit (task_steps, step_key 'plan' or 'replan'),
-- stored there once.
ALTER TABLE tasks DROP COLUMN plan;
