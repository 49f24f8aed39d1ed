"""Training: the shared loop (`loop`), stage 1 (`pretrain`) and stage 2 (`metatrain`)."""
