"""Images made from the network: deep dream, texture and style, adversarial and fooling images."""
