"""RFC 4787 NAT behaviours (`behavior`), their nftables rendering (`nftables`), the seed's
firewall policies (`firewall`), link impairments (`impairments`) and the small namespace
helpers they need (`netns`).  Rendering is pure; applying happens inside lab namespaces."""
