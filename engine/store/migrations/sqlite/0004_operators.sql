-- The instance operators: accounts set up from the command line by whoever runs the
-- binary (`keyway admin create-operator`). Only an operator issues vouchers.
CREATE TABLE operators (
    account INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);
