<?php
/**
 * Uninstall: remove the plugin's options (on every site of a network) and its comment meta.
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
	foreach ( array( 'activelead_settings', 'activelead_status', 'activelead_stats' ) as $activelead_option ) {
		delete_option( $activelead_option );
	}
	foreach ( array( 'activelead_result', 'activelead_trace_id', 'activelead_feedback' ) as $activelead_meta ) {
		delete_metadata( 'comment', 0, $activelead_meta, '', true );
		delete_metadata( 'user', 0, $activelead_meta, '', true );
	}
}

if ( is_multisite() ) {
	foreach ( get_sites( array( 'fields' => 'ids' ) ) as $activelead_site_id ) {
		switch_to_blog( (int) $activelead_site_id );
		activelead_uninstall_site();
		restore_current_blog();
	}
	delete_site_option( 'activelead_network_settings' );
} else {
	activelead_uninstall_site();
}
