"""The offline demo: corpus, chat data, smoke-pipeline callables, a chat client, a torchrun probe."""
