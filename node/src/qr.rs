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
