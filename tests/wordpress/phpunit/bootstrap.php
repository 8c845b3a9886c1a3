<?php
/**
 * PHPUnit bootstrap: load the test WordPress (WP_DIR) with the plugin active and pointed at the
 * running control API; the pytest fixture that runs PHPUnit sets both up.
 */
$_SERVER['HTTP_HOST']       = getenv( 'HTTP_HOST' );
$_SERVER['REQUEST_URI']     = '/';
$_SERVER['REMOTE_ADDR']     = '127.0.0.1';
$_SERVER['HTTP_USER_AGENT'] = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36';
require getenv( 'WP_DIR' ) . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/template.php'; // add_settings_error(), as on the settings page.
require __DIR__ . '/stubs.php';
if ( ! class_exists( 'Activelead' ) ) {
	fwrite( STDERR, "the activelead plugin is not active in WP_DIR\n" );
	exit( 1 );
}
