-- The W3C traceparent of the request that submitted the task: its steps continue that trace.
ALTER TABLE tasks ADD COLUMN trace_parent TEXT;
