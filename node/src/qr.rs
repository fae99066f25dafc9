//! Payment requests as QR codes in the terminal.

use qrcode::QrCode;
use qrcode::render::unicode;

/// Renders `text` as a QR code of half-height Unicode blocks, or says why it cannot.
pub fn render(text: &str) -> String {
    match QrCode::new(text.to_ascii_uppercase().as_bytes()) {
        Ok(code) => code
            .render::<unicode::Dense1x2>()
            .dark_color(unicode::Dense1x2::Light)
            .light_color(unicode::Dense1x2::Dark)
            .build(),
        Err(e) => format!("(no QR code: {e})"),
    }
}

/// Renders `text` as an SVG QR code (dark modules on white, a four-module quiet zone), or
/// `None` when it does not fit in one.
pub fn svg(text: &str) -> Option<String> {
    use std::fmt::Write as _;
    let code = QrCode::new(text.to_ascii_uppercase().as_bytes()).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 8;
    let mut path = String::new();
    for (i, c) in colors.iter().enumerate() {
        if *c == qrcode::Color::Dark {
            let _ = write!(path, "M{} {}h1v1h-1z", i % width + 4, i / width + 4);
        }
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/><path fill=\"#000\" d=\"{path}\"/></svg>"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn svg_draws_every_dark_module() {
        let svg = super::svg("mpreq1abc").expect("fits");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        let code = qrcode::QrCode::new(b"MPREQ1ABC").unwrap();
        let dark = code
            .to_colors()
            .iter()
            .filter(|c| **c == qrcode::Color::Dark)
            .count();
        assert_eq!(svg.matches('M').count(), dark, "one square per dark module");
        assert!(super::svg(&"x".repeat(5000)).is_none());
    }
}
