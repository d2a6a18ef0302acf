"""Several nodes, one picture: the cluster bus (NATS JetStream) and what runs on it."""
