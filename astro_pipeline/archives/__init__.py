"""Archive clients (MAST via astroquery; HLA and ESA/Hubble via Playwright), the shared
verified downloader, and a local replica server of all three."""
