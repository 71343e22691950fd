"""Authentication (who is calling) and authorization (what they may do), for every RPC.

`authenticator` turns a call's bearer token or client certificate into a `Principal`;
`policy` holds the one table that says which role each RPC needs on which experiment;
`resources` finds the experiment a request touches; `interceptor` applies all three to every
call before a servicer runs.
"""
