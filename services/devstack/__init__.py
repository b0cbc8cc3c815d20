"""`make run`'s greeter: waits until the local stack answers, then says where everything listens."""
