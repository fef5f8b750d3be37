"""The ADDM application on top of the generic ledger.

Before anything of it reads a ledger, the ledger learns what this application's older records meant (their batch
status words were OpenAI's): one place, whichever module is imported first.
"""

from addm_integration.provider import openai_api

openai_api.read_older_records()
