"""Site generators (Hugo, Jekyll, Pelican, Eleventy, Astro): each module reads its generator's own
config without running it, and derives a post's URL the way that generator does."""
