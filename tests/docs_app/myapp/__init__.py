"""The tiny application the documentation's examples schedule."""
