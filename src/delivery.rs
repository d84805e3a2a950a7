//! TODO: being written in parallel (durable outbound queue and delivery)
