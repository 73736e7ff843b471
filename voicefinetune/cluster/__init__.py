"""The cluster vocabulary every part may use: the VoiceFinetune resource's coordinates and spec mapping
(``resource``), a small dict-in/dict-out Kubernetes API client (``client``), and which inference replica serves a
voice (``routing``). It uses no part: the operator and the facade's Kubernetes backend both build on it."""
