"""Payloads of any size: the body of a message too large for its queue is kept in a payload store
(S3) and the message carries a pointer in the format of AWS's SQS extended client libraries.

- :mod:`~cloudjobs.payloads.pointer`: the pointer body and attribute, and the envelope fields a
  re-sent pointer message carries beside it.
- :mod:`~cloudjobs.payloads.store`: the :class:`PayloadStore` protocol and the memory store.
- :mod:`~cloudjobs.payloads.s3`: the S3 store (boto3 imported on first use).

Nothing is imported here, so ``import cloudjobs`` stays lean. See docs/payloads.md.
"""
