<?php
/**
 * Uninstall: remove the plugin's options and transients (on every site of a network), its network
 * option, and its comment and user meta. Runs without the plugin loaded.
 *
 * @package Activelead
 */

if ( ! defined( 'WP_UNINSTALL_PLUGIN' ) ) {
	exit;
}

/**
 * Remove one site's data.
 *
 * @return void
 */
function activelead_uninstall_site() {
	global $wpdb;
	foreach ( array( 'activelead_settings', 'activelead_status', 'activelead_stats' ) as $activelead_option ) {
		delete_option( $activelead_option );
	}
	delete_transient( 'activelead_credits_checked' );
	// "Test connection" results, one transient per user (activelead_test_<user id>).
	$activelead_transients = $wpdb->get_col( // phpcs:ignore WordPress.DB.DirectDatabaseQuery -- uninstall, once.
		$wpdb->prepare( "SELECT option_name FROM {$wpdb->options} WHERE option_name LIKE %s", $wpdb->esc_like( '_transient_activelead_test_' ) . '%' )
	);
	foreach ( $activelead_transients as $activelead_transient ) {
		delete_transient( substr( $activelead_transient, strlen( '_transient_' ) ) );
	}
	foreach ( array( 'activelead_result', 'activelead_trace_id', 'activelead_feedback' ) as $activelead_meta ) {
		delete_metadata( 'comment', 0, $activelead_meta, '', true );
		delete_metadata( 'user', 0, $activelead_meta, '', true );
	}
}

if ( is_multisite() ) {
	foreach ( get_sites(
		array(
			'fields' => 'ids',
			'number' => 0,
		)
	) as $activelead_site_id ) {
		switch_to_blog( (int) $activelead_site_id );
		activelead_uninstall_site();
		restore_current_blog();
	}
	delete_site_option( 'activelead_network_settings' );
} else {
	activelead_uninstall_site();
}
