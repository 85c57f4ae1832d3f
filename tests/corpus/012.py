"""Expect: 100-continue with the body held back gets a 100 Continue when the body is read."""

EXPECT = {"continued": True}
