"""Talking to Temporal from any process: the client, its encrypted data converter, and starting
or joining the durable flows (recoveries, emergencies). Used by the API, the worker and the
activities that start workflows; imports workflows/ for their types and entry points."""
